"""Tables of loyalty.events: the outbox of outbound events, webhook endpoints, the deliveries
fanned out to them and the log of every delivery attempt; the lifecycle triggers' settings,
their progress marks and the occurrences they have sent."""

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
LIFECYCLE_TYPES = (
    "lifecycle.first_order",
    "points.expiring_soon",
    "member.birthday",
    "member.inactive",
)


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


class LifecycleSettings(Base):
    """Which lifecycle triggers are on and their windows: one row (id 1), seeded by the
    migration, changed through ``PATCH /v1/webhooks/lifecycle`` (audited)."""

    __tablename__ = "lifecycle_settings"
    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("expiring_soon_days BETWEEN 1 AND 365", name="expiring_soon_days"),
        CheckConstraint("inactive_days BETWEEN 1 AND 3650", name="inactive_days"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    first_order_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    expiring_soon_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    birthday_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    inactive_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    expiring_soon_days: Mapped[int] = mapped_column(Integer, default=30)
    inactive_days: Mapped[int] = mapped_column(Integer, default=90)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class LifecycleMark(Base):
    """How far one trigger's passes have got (its high-water mark), so that each pass reads
    only what is new since the last one. One row per trigger, made by its first pass; a pass
    locks it for each batch, so two workers never run the same trigger's batch at once.

    What ``mark_at`` and ``cursor`` hold depends on the trigger (see
    `loyalty.events.lifecycle`); both are None until the first pass."""

    __tablename__ = "lifecycle_marks"
    __table_args__ = (CheckConstraint(one_of("type", LIFECYCLE_TYPES), name="type"),)

    type: Mapped[str] = mapped_column(String(64), primary_key=True)
    mark_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cursor: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class LifecycleSent(Base):
    """One occurrence of a lifecycle trigger told to the outside world: written in the
    transaction of its outbox event, and unique per (member, type, occurrence), so each
    occurrence is sent once however many workers run and wherever a pass was interrupted.

    ``occurrence`` names what happened: ``first`` (a first order), the year (a birthday),
    the expiry moment (points expiring soon) or the last activity (an inactivity spell).
    No foreign key, as for outbox events: the record outlives an erased member. Kept
    `loyalty.events.lifecycle.RETENTION`."""

    __tablename__ = "lifecycle_sent"
    __table_args__ = (
        UniqueConstraint("member_id", "type", "occurrence"),
        CheckConstraint(one_of("type", LIFECYCLE_TYPES), name="type"),
        Index("ix_lifecycle_sent_sent_at", "sent_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(64))
    occurrence: Mapped[str] = mapped_column(String(64))
    sent_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
