"""Recording and reading the audit trail.

`record` runs inside the unit of work of the change it describes (it never commits), so a
change and its audit record are written together or not at all.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.audit.models import AuditRecord
from loyalty.db import Page
from loyalty.errors import InvalidFieldError


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
    if cursor is not None:
        if not (cursor.isdigit() and len(cursor) <= 18):
            raise InvalidFieldError("cursor", "Not a valid cursor.")
        query = query.where(AuditRecord.id < int(cursor))
    records = list(session.scalars(query.limit(limit + 1)))
    more = len(records) > limit
    records = records[:limit]
    return Page(items=records, next_cursor=str(records[-1].id) if more else None)
