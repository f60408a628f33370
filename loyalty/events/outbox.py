"""The transactional outbox: `record` writes an outbound event in the caller's transaction, so
the event exists exactly when the change it tells was committed. The worker fans events out
to the webhook endpoints afterwards (`loyalty.events.delivery`).

On PostgreSQL, `record` also queues a notification on `CHANNEL` (``pg_notify``, in the
statement that writes the transaction's first outbox row): PostgreSQL sends it when the
transaction commits (never if it rolls back), which wakes ``loyalty worker`` at once.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from functools import cache
from typing import Any, cast

from marshmallow import Schema, fields, missing
from sqlalchemy import Table, bindparam, func, insert, literal_column
from sqlalchemy.orm import Session

from loyalty import bus, clock
from loyalty.api import Timestamp
from loyalty.db import insert_rows, new_id, transaction_scoped
from loyalty.events.catalogue import CATALOGUE, PAYLOAD_VERSION
from loyalty.events.models import OutboxEvent

# The LISTEN/NOTIFY channel that wakes the workers.
CHANNEL = "loyalty_outbox"
# session.info key: the transaction that already queued its NOTIFY.
_NOTIFIED = "loyalty_outbox_notified"


class UnknownOutboundEventError(ValueError):
    """A type that is not in `loyalty.events.catalogue.CATALOGUE`: a programming error."""


@cache
def _data_schema(event_type: str) -> Schema:
    return CATALOGUE[event_type][0]()


def record(
    session: Session,
    *,
    type: str,
    member_id: str | None,
    data: dict[str, Any],
    occurred_at: dt.datetime,
) -> str:
    """Add an outbound event to the caller's transaction and return its id (``evt_...``).

    One INSERT (the transaction's first also queues its NOTIFY on PostgreSQL); inside a
    `loyalty.bus.batch` the rows are inserted together at its end. Never commits, never fans
    out.
    ``data`` is written as the catalogue's schema for ``type`` dumps it (timestamps as RFC
    3339, undeclared keys dropped, every declared key present: null when not given).
    Raises `UnknownOutboundEventError` for a type that is not in the catalogue and ValueError
    for a naive ``occurred_at``.
    """
    if type not in CATALOGUE:
        raise UnknownOutboundEventError(
            f"{type!r} is not an outbound event type: add it to loyalty.events.catalogue"
        )
    if occurred_at.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware")
    row = {
        "id": new_id("evt"),
        "type": type,
        "version": PAYLOAD_VERSION,
        "occurred_at": occurred_at,
        "member_id": member_id,
        "data": _payload(type, data),
    }
    if _first_notice(session):
        # The transaction's NOTIFY rides on its first outbox row: no round trip of its own.
        row["created_at"] = clock.now()
        session.execute(_INSERT_NOTIFYING, row)
        return str(row["id"])
    pending = bus.gathering(session, "outbox", lambda rows: _insert(session, rows))
    if pending is not None:
        pending.append(row)  # a batch of the job: its rows go in together at its end
    else:
        row["created_at"] = clock.now()
        session.execute(_INSERT, row)
    return str(row["id"])


# Built once (a Core insert of the table, values from the parameters): most transactions
# send one, and building a statement costs about as much CPU as sending it.
_INSERT = insert(cast(Table, OutboxEvent.__table__))
_INSERT_NOTIFYING = _INSERT.returning(func.pg_notify(CHANNEL, ""))


# session.info: the events whose outbox row was written ahead of the outbox writer's turn
# (`riding`, `write_ahead`), by id.
_AHEAD = transaction_scoped("loyalty.events.ahead")


def riding(
    session: Session, event: bus.Event, *, type: str, data: dict[str, Any]
) -> dict[str, Any]:
    """The values of ``event``'s outbox row for a statement of the change that writes it along
    (`riding_clause`): the event then counts as recorded (`written_ahead`). The statement
    queues the transaction's NOTIFY (`notifying`)."""
    _first_notice(session)
    mark_written(session, event)
    return {"outbox_id": new_id("evt"), "outbox_data": _payload(type, data)}


def mark_written(session: Session, event: bus.Event) -> None:
    """Count ``event``'s outbox row as written, ahead of the outbox writer's turn."""
    session.info.setdefault(_AHEAD, {})[id(event)] = event


def written_ahead(session: Session, event: bus.Event) -> bool:
    """Whether ``event``'s outbox row was written ahead of the outbox writer's turn."""
    return id(event) in session.info.get(_AHEAD, {})


def riding_clause(type: str, *, occurred_at: str, member_id: str) -> Any:
    """The INSERT of an outbox row of ``type`` with its id and data from the parameters
    ``outbox_id`` and ``outbox_data``, when it happened and whose from the parameters named,
    created when it happened."""
    if type not in CATALOGUE:
        raise UnknownOutboundEventError(f"{type!r} is not an outbound event type")
    table = cast(Table, OutboxEvent.__table__)
    moment = bindparam(occurred_at, type_=table.c.occurred_at.type)
    return insert(table).values(
        id=bindparam("outbox_id", type_=table.c.id.type),
        type=literal_column(f"'{type}'"),
        version=literal_column(str(int(PAYLOAD_VERSION))),
        occurred_at=moment,
        member_id=bindparam(member_id, type_=table.c.member_id.type),
        data=bindparam("outbox_data", type_=table.c.data.type),
        created_at=moment,
    )


def notifying() -> tuple[Any, ...]:
    """The column that queues the NOTIFY of a statement writing an outbox row."""
    return (func.pg_notify(literal_column(f"'{CHANNEL}'"), literal_column("''")),)


def bulk_clause(source: str, types: dict[str, str], *, order: str, now: str) -> str:
    """SQL: data-modifying WITH clauses writing an outbox row for each row of ``source`` (a
    WITH clause of the same statement) whose ``event`` column is a key of ``types`` (its
    outbound type), in the order of its column ``order``, happened at the parameter ``now``,
    with the ids and creation time of `bulk_parameters`.

    ``data`` is built from the type's catalogue schema: each declared field from the column of
    its name, a nested schema's from ``<field>_<subfield>`` columns (every declared key
    present, null when the column is); for types whose fields are integers, strings and
    nested schemas of them only (ValueError otherwise). The statement also needs
    `bulk_notice` among what it computes."""
    cases = []
    for event, type_ in types.items():
        if type_ not in CATALOGUE:
            raise UnknownOutboundEventError(f"{type_!r} is not an outbound event type")
        data = _json_object(_data_schema(type_), "t.")
        cases.append(f"WHEN '{event}' THEN '{type_}'")
        cases.append(f"WHEN '{event}' THEN {data}")
    kinds = " ".join(cases[0::2])
    payloads = " ".join(cases[1::2])
    wanted = ", ".join(f"'{event}'" for event in types)
    return f"""outbox_told AS (
    SELECT t.*, row_number() OVER (ORDER BY t.{order}) AS k
    FROM {source} t WHERE t.event IN ({wanted})
),
outbox_seqs AS (
    SELECT seq, row_number() OVER (ORDER BY seq) AS k
    FROM (SELECT nextval((SELECT pg_get_serial_sequence('outbox_events', 'seq'))) AS seq
          FROM outbox_told) AS drawn
),
outbox_rows AS (
    INSERT INTO outbox_events (seq, id, type, version, occurred_at, member_id, data, created_at)
    SELECT s.seq, :bulk_ids_from || lpad(upper(to_hex(:bulk_ids_base + s.k)), 16, '0'),
           CASE t.event {kinds} END, {int(PAYLOAD_VERSION)}, :{now}, t.member_id,
           CASE t.event {payloads} END, :bulk_created_at
    FROM outbox_told t JOIN outbox_seqs s USING (k)
    RETURNING 1
)"""


def bulk_parameters(session: Session) -> dict[str, Any]:
    """The parameters of `bulk_clause`, taken just before its statement runs: the rows are
    created now, and their ids are ``evt_`` and a ULID of now whose random part counts up from
    a random 62-bit number, one a row in the order they are written (written as 16
    hexadecimal digits, which are Crockford base-32 digits too), so that they sort as the
    rows were written, as `new_id`'s do."""
    return {
        "bulk_ids_from": new_id("evt")[: len("evt_") + 10],
        "bulk_ids_base": secrets.randbits(62),
        "bulk_created_at": clock.now(),
    }


def bulk_notice() -> str:
    """What a statement with `bulk_clause` computes besides: the transaction's NOTIFY, queued
    when it wrote a row."""
    return f"(SELECT pg_notify('{CHANNEL}', '') FROM outbox_rows LIMIT 1) AS outbox_notice"


def _json_object(schema: Schema, prefix: str) -> str:
    pairs = []
    for name, field in schema.dump_fields.items():
        if isinstance(field, fields.Nested) and type(field) is fields.Nested and not field.many:
            value = _json_object(field.schema, f"{prefix}{name}_")
        elif type(field) in (fields.Integer, fields.String) and field.data_key in (None, name):
            value = f"{prefix}{name}"
        else:
            raise ValueError(f"{name}: only integers, strings and nested schemas of them")
        pairs.append(f"'{name}', {value}")
    return f"jsonb_build_object({', '.join(pairs)})"


def _insert(session: Session, rows: list[dict[str, Any]]) -> None:
    """A batch's rows, created now (when they go in), together."""
    now = clock.now()
    for row in rows:
        row["created_at"] = now
    insert_rows(session, OutboxEvent, rows)


def _payload(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return _dumper(event_type)(data)


@cache
def _dumper(event_type: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """What `_payload` does with the type's data: every declared key, null when not given,
    then what the schema dumps. For a schema of plain fields (integers, strings, timestamps,
    nested plain schemas) the dump is done by a function that converts the values as those
    fields do, without marshmallow's machinery (a job writes hundreds of thousands of
    events, and the generic dump was most of an event's CPU); tests hold it equal to the
    schema's dump for every type of the catalogue."""
    schema = _data_schema(event_type)
    nulls = dict.fromkeys(schema.fields)
    plain = _plain_dump(schema)
    if plain is None:
        return lambda data: nulls | schema.dump(data)
    return lambda data: nulls | plain(data)


_Convert = Callable[[Any], Any]


def _plain_dump(schema: Schema) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """``schema.dump`` of a dict for a schema whose dumped fields are all plain (see
    `_dumper`), or None for any other schema."""
    if any(schema._hooks.values()) or schema.many:
        return None
    converters: list[tuple[str, _Convert]] = []
    for name, field in schema.dump_fields.items():
        convert = _plain_convert(field)
        if (
            convert is None
            or field.data_key not in (None, name)
            or field.attribute is not None
            or field.dump_default is not missing
            or hasattr(dict, name)  # marshmallow would read the dict's attribute
        ):
            return None
        converters.append((name, convert))

    def dump(data: dict[str, Any]) -> dict[str, Any]:
        if type(data) is not dict:  # an object: marshmallow reads its attributes
            return schema.dump(data)
        return {
            name: None if value is None else convert(value)
            for name, convert in converters
            if (value := data.get(name, missing)) is not missing
        }

    return dump


def _plain_convert(field: fields.Field) -> _Convert | None:
    """How ``field`` dumps a value that is not None, when it is a plain field."""
    kind = type(field)
    if kind is fields.Integer and not field.as_string:  # type: ignore[attr-defined]
        return int
    if kind is fields.String:
        return str
    if kind is Timestamp:
        return Timestamp.rfc3339
    if kind is fields.Nested and not field.many:  # type: ignore[attr-defined]
        inner = field.schema  # type: ignore[attr-defined]
        return _plain_dump(inner) if isinstance(inner, Schema) else None
    return None


def _first_notice(session: Session) -> bool:
    """Whether this is the transaction's first outbox row on PostgreSQL, which queues the
    transaction's one NOTIFY (PostgreSQL folds identical ones anyway)."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    transaction = session.get_transaction()
    if transaction is None or session.info.get(_NOTIFIED) is transaction:
        return False
    session.info[_NOTIFIED] = transaction
    return True


def envelope(event: OutboxEvent) -> dict[str, Any]:
    """The event as webhooks deliver it: ``{id, type, version, occurred_at, member_id, data}``."""
    return {
        "id": event.id,
        "type": event.type,
        "version": event.version,
        "occurred_at": event.occurred_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "member_id": event.member_id,
        "data": event.data,
    }
