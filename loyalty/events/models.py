"""Tables of loyalty.events: the outbox of outbound events, webhook endpoints, the deliveries
fanned out to them and the log of every delivery attempt."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from loyalty.db import Base, JSONDocument, UTCDateTime, one_of, utcnow

BigId = BigInteger().with_variant(Integer(), "sqlite")

DELIVERY_STATUSES = ("pending", "delivered", "failed")


class OutboxEvent(Base):
    """One outbound event, written in the transaction of the change it tells (see
    `loyalty.events.outbox.record`); fanned out to the webhook endpoints later by the worker.

    ``seq`` orders events as they were written; ``id`` (``evt_...``) is the public id, the
    ``webhook-id`` receivers deduplicate by. Kept 30 days for replays."""

    __tablename__ = "outbox_events"
    __table_args__ = (
        UniqueConstraint("id"),
        CheckConstraint("version > 0", name="version"),
        # The worker's queue: events not fanned out yet, oldest first.
        Index(
            "ix_outbox_events_undispatched",
            "seq",
            postgresql_where=text("dispatched_at IS NULL"),
            sqlite_where=text("dispatched_at IS NULL"),
        ),
        Index("ix_outbox_events_created_at", "created_at"),
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # No foreign key: the event outlives an erased member, and the insert stays one statement.
    member_id: Mapped[str | None] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the worker fanned it out to the endpoints; None: not yet.
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class WebhookEndpoint(Base):
    """A receiver of signed webhooks: a URL and the event types it wants.

    Signing secrets are stored sealed (`loyalty.sealing`); during a rotation the previous one
    keeps signing until ``previous_secret_expires_at``. A worker delivering to the endpoint
    holds its lease (``lease_token`` until ``lease_until``), so one worker at a time sends to
    one endpoint, in order."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        CheckConstraint(
            "(previous_secret IS NULL) = (previous_secret_expires_at IS NULL)",
            name="previous_secret",
        ),
        CheckConstraint("(lease_token IS NULL) = (lease_until IS NULL)", name="lease"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list[str]] = mapped_column(JSONDocument)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str | None] = mapped_column(String(500))
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    secret: Mapped[str] = mapped_column(Text)  # sealed
    previous_secret: Mapped[str | None] = mapped_column(Text)  # sealed
    previous_secret_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # First failed attempt since the last success; None while deliveries succeed.
    failing_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lease_token: Mapped[str | None] = mapped_column(String(40))
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One event to send to one endpoint (a replay is a delivery of its own): pending until an
    attempt succeeds (delivered) or its retries run out (failed)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(one_of("status", DELIVERY_STATUSES), name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        CheckConstraint("(status = 'pending') = (next_attempt_at IS NOT NULL)", name="next"),
        # The due deliveries of an endpoint, in the order they were fanned out.
        Index(
            "ix_webhook_deliveries_due",
            "endpoint_id",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index("ix_webhook_deliveries_event_seq", "event_seq"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_seq: Mapped[int] = mapped_column(
        BigId, ForeignKey("outbox_events.seq", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    first_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    replay: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery, as the endpoint's delivery log shows it."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        Index("ix_webhook_attempts_endpoint_id", "endpoint_id", "id"),
        Index("ix_webhook_attempts_delivery_id", "delivery_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    endpoint_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    replay: Mapped[bool] = mapped_column(Boolean, default=False)
    attempted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer)
    response_excerpt: Mapped[str | None] = mapped_column(String(1000))
    error: Mapped[str | None] = mapped_column(String(500))
    # When the delivery will be tried again; None once delivered or given up.
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    @property
    def succeeded(self) -> bool:
        return self.error is None
