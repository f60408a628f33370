"""The audit trail of configuration changes: who changed what, when, before and after."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from loyalty.db import Base, JSONDocument, UTCDateTime, utcnow

BigId = BigInteger().with_variant(Integer(), "sqlite")


class AuditRecord(Base):
    """One configuration change. Written in the transaction of the change; never edited."""

    __tablename__ = "audit_records"
    __table_args__ = (
        Index("ix_audit_records_entity", "entity_type", "entity_id"),
        Index("ix_audit_records_actor", "actor"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    # created, updated, deleted, or a verb of the area such as assigned
    action: Mapped[str] = mapped_column(String(32))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(128))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    reason: Mapped[str | None] = mapped_column(String(500))
