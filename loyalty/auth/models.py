"""Channels and API clients: storefronts, points of sale and apps, and the credentials they
call the API with."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from loyalty.auth.rules import DEFAULT_CHANNEL
from loyalty.db import Base, JSONDocument, UTCDateTime, utcnow


class Channel(Base):
    """Where orders come from (a web shop, a point of sale, an app): order, refund and event
    ids are unique per channel, so any client of the channel may report, read and refund
    them, and rotating credentials never splits a storefront's orders."""

    __tablename__ = "channels"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiClient(Base):
    __tablename__ = "api_clients"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id"), default=DEFAULT_CHANNEL)
    # argon2id hash of the secret; the secret itself is shown once and never stored.
    secret_hash: Mapped[str] = mapped_column(String(255))
    scopes: Mapped[list[str]] = mapped_column(JSONDocument)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    @property
    def active(self) -> bool:
        return self.revoked_at is None
