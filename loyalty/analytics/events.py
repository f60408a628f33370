"""What the analytics tells: a member became at risk, retention dropped. Both go out through
the outbox (`member.at_risk`, `analytics.alert`), registered here with the outbox writer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from loyalty.bus import Event
from loyalty.events.writer import Outbound, outbound_of


@dataclass(frozen=True, kw_only=True)
class MemberAtRisk(Event):
    member_id: str
    flag_id: str
    reason: str
    recent: int
    baseline: Decimal
    last_active_at: dt.datetime | None


@dataclass(frozen=True, kw_only=True)
class RetentionDropped(Event):
    member_id: None = None
    alert_id: str
    kind: str
    day: dt.date
    current_rate: Decimal
    previous_rate: Decimal
    drop_points: Decimal
    members: int


@outbound_of.register
def _(event: MemberAtRisk, session: Session) -> Outbound:
    return "member.at_risk", {
        "flag_id": event.flag_id,
        "reason": event.reason,
        "recent_activity": event.recent,
        "baseline_activity": float(event.baseline),
        "last_active_at": event.last_active_at,
    }


@outbound_of.register
def _(event: RetentionDropped, session: Session) -> Outbound:
    return "analytics.alert", {
        "alert_id": event.alert_id,
        "metric": "retention_30_day",
        "compared_with": event.kind,
        "day": event.day,
        "current_rate": float(event.current_rate),
        "previous_rate": float(event.previous_rate),
        "drop_points": float(event.drop_points),
        "members": event.members,
    }
