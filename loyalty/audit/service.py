"""Recording and reading the audit trail.

`record` runs inside the unit of work of the change it describes (it never commits), so a
change and its audit record are written together or not at all.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.audit.models import AuditRecord
from loyalty.db import Page, keyset_page


def snapshot(values: dict[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy of ``values`` (timestamps as RFC 3339, decimals as strings)."""

    def convert(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            items = [convert(v) for v in value]
            return sorted(items, key=json.dumps) if isinstance(value, set | frozenset) else items
        return value

    result: dict[str, Any] = convert(values)
    return result


def snapshot_of(row: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The values of ``fields`` on ``row``, for ``before``/``after``."""
    return {name: getattr(row, name) for name in fields}


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str | None = None,
) -> AuditRecord | None:
    """Add an audit record to the current unit of work; ``before``/``after`` are snapshots of
    the changed entity (None when it did not exist). An update that changed nothing is not
    recorded (returns None)."""
    before = snapshot(before) if before is not None else None
    after = snapshot(after) if after is not None else None
    if action == "updated" and before == after:
        return None
    audit = AuditRecord(
        at=clock.now(),
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        before=before,
        after=after,
        reason=reason,
    )
    session.add(audit)
    return audit


@contextmanager
def recorded_update(
    session: Session,
    row: Any,
    fields: tuple[str, ...],
    *,
    actor: str,
    entity_type: str,
    entity_id: str,
) -> Iterator[dict[str, Any]]:
    """Audit what the ``with`` block changes in ``row``: its ``fields`` before (yielded, for
    checks that need them) and after. On leaving the block the row's ``updated_at`` (and
    ``updated_by``, where it has one) is stamped; an error inside records nothing (the unit of
    work rolls back)."""
    before = snapshot_of(row, fields)
    yield before
    if hasattr(row, "updated_at"):
        row.updated_at = clock.now()
    if hasattr(row, "updated_by"):
        row.updated_by = actor[:64]
    record(
        session,
        actor=actor,
        action="updated",
        entity_type=entity_type,
        entity_id=entity_id,
        before=before,
        after=snapshot_of(row, fields),
    )


def apply_changes(row: Any, changes: dict[str, Any], fields: tuple[str, ...]) -> None:
    """Set each of ``fields`` that ``changes`` names (others stay as they are)."""
    for name in fields:
        if name in changes:
            setattr(row, name, changes[name])


def list_records(
    session: Session,
    *,
    entity_type: str | None = None,
    entity_id: str | None = None,
    actor: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[AuditRecord]:
    """Audit records matching the filters, newest first, a page at a time."""
    query: Select[AuditRecord] = select(AuditRecord).order_by(AuditRecord.id.desc())
    if entity_type is not None:
        query = query.where(AuditRecord.entity_type == entity_type)
    if entity_id is not None:
        query = query.where(AuditRecord.entity_id == entity_id)
    if actor is not None:
        query = query.where(AuditRecord.actor == actor)
    return keyset_page(
        session, query, AuditRecord.id, limit, cursor, newest_first=True, numeric=True
    )
