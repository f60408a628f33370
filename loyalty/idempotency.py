"""``Idempotency-Key`` on every state-changing call, as Stripe does it and the IETF draft
specifies. `loyalty.api.Blueprint.requires` applies it to every authenticated POST, PUT, PATCH
and DELETE; the token endpoint is the exception (it has no API client to scope a key to).

The key is claimed in the same transaction as the request's effect, and the response (a
business rejection such as insufficient points included) is stored with it. A retry with the
same key and the same request gets the stored status and body again, byte for byte, and no
second effect; the same key with another request is 422; a retry that arrives while the first
is still running waits for it (up to the lock timeout, then 409). Validation failures (the
request never started) are not stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Response, current_app, g, request
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    select,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column

from loyalty import clock, jsonbody, problems, sealing
from loyalty.db import (
    RETRIES,
    Base,
    RunAgainError,
    UTCDateTime,
    configuration_gone,
    dialect_insert,
    get_session,
    is_busy,
    is_retryable,
    request_transaction,
    unit_of_work,
    utcnow,
)
from loyalty.errors import (
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    InvalidIdempotencyKeyError,
    LedgerBusyError,
    LoyaltyError,
)
from loyalty.fingerprint import request_fingerprint

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Keys are kept at least this long; the job deletes older ones.
RETENTION = dt.timedelta(hours=48)
# Set on views wrapped by `idempotent` (and copied onto the wrappers around them).
_MARK = "honours_idempotency_key"
# A stored body that shows a secret is sealed (`seal_stored_response`) and marked so; a JSON
# body never starts with this.
_SEALED = "sealed:"
_SEAL_PURPOSE = "stored response"

BigId = BigInteger().with_variant(Integer(), "sqlite")


class IdempotencyRecord(Base):
    """A request made with an Idempotency-Key, and the response it got."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("client_id", "key"),
        CheckConstraint("(status_code IS NULL) = (body IS NULL)", name="response"),
        Index("ix_idempotency_keys_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(500))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(100))
    body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


def idempotent(view: Callable[..., Any], *, caller: Callable[[], str]) -> Callable[..., Any]:
    """Make a view honour ``Idempotency-Key``; without the header it runs as it is. Keys are
    scoped to the API client ``caller()`` names (the request's authenticated client)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not 1 <= len(key) <= 255 or not all(32 <= ord(c) < 127 for c in key):
            raise InvalidIdempotencyKeyError()
        client_id = caller()
        fingerprint = request_fingerprint(request.method, request.path, _body())
        session = get_session()
        for attempt in range(RETRIES):
            try:
                return _run(session, view, args, kwargs, client_id, key, fingerprint)
            except RunAgainError as error:
                if attempt < RETRIES - 1:
                    continue
                raise LedgerBusyError() from error
            except IntegrityError as error:
                if configuration_gone(error) and attempt < RETRIES - 1:
                    continue
                raise
            except OperationalError as error:
                if not is_busy(error) and is_retryable(error) and attempt < RETRIES - 1:
                    continue
                raise LedgerBusyError() from error
        raise AssertionError("unreachable")

    setattr(wrapper, _MARK, True)
    return wrapper


def seal_stored_response() -> None:
    """Store this request's response sealed (`loyalty.sealing`): for responses that show a
    secret once, so that the idempotency table does not keep it readable."""
    g.loyalty_seal_stored_response = True


def honours_idempotency_key(view: Callable[..., Any]) -> bool:
    """Whether ``view`` (or a view it wraps) was made `idempotent`."""
    return bool(getattr(view, _MARK, False))


def _body() -> Any:
    data = request.get_data(cache=True)
    if not data:
        return None
    try:
        return jsonbody.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


def _run(
    session: Session,
    view: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    client_id: str,
    key: str,
    fingerprint: str,
) -> Response:
    try:
        with request_transaction(session):
            record = _claim(session, client_id, key, fingerprint)
            if record.request_hash != fingerprint:
                raise IdempotencyKeyReusedError()
            if record.status_code is not None:
                return _replay(record)
            try:
                response = current_app.make_response(view(*args, **kwargs))
            except LoyaltyError as error:
                response = problems.handle_domain_error(error)
            if response.status_code >= 500:
                raise _UnstoredError(response)
            record.status_code = response.status_code
            record.content_type = response.content_type
            body = response.get_data(as_text=True)
            if g.pop("loyalty_seal_stored_response", False):
                body = _SEALED + sealing.seal(body, purpose=_SEAL_PURPOSE)
            record.body = body
    except _UnstoredError as unstored:
        return unstored.response  # the key is released: a retry runs the request again
    return response


class _UnstoredError(Exception):
    """A server-side failure: roll back, key included, and answer without storing."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _claim(session: Session, client_id: str, key: str, fingerprint: str) -> IdempotencyRecord:
    """Insert the key, or wait for the transaction holding it and read what it stored."""
    values = {
        "client_id": client_id,
        "key": key,
        "method": request.method,
        "path": request.path[:500],
        "request_hash": fingerprint,
        "created_at": clock.now(),
    }
    insert = dialect_insert(session)
    try:
        session.execute(insert(IdempotencyRecord).values(**values).on_conflict_do_nothing())
    except OperationalError as error:
        if is_busy(error):  # the first request still holds the key after the lock timeout
            raise IdempotencyKeyInUseError() from error
        raise
    record = session.scalar(
        select(IdempotencyRecord)
        .where(IdempotencyRecord.client_id == client_id, IdempotencyRecord.key == key)
        .execution_options(populate_existing=True)
    )
    assert record is not None
    return record


def _replay(record: IdempotencyRecord) -> Response:
    body = record.body or ""
    if body.startswith(_SEALED):
        try:
            body = sealing.unseal(body[len(_SEALED) :], purpose=_SEAL_PURPOSE)
        except sealing.UnsealError:
            raise IdempotencyKeyReusedError() from None  # SECRET_KEY changed: cannot replay
    response = current_app.response_class(
        body, status=record.status_code, content_type=record.content_type
    )
    response.headers[REPLAYED_HEADER] = "true"
    return response


def purge_expired_keys(session: Session) -> int:
    """Delete keys older than the retention period; returns how many."""
    with unit_of_work(session):
        result = session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.created_at < clock.now() - RETENTION)
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
