"""Retention alerts: once a day, 30-day retention of the latest cohorts against a week and a
month before; a drop beyond the managers' threshold records an alert and publishes
`RetentionDropped` (an ``analytics.alert`` webhook)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty import bus, clock
from loyalty.analytics import rules
from loyalty.analytics.events import RetentionDropped
from loyalty.analytics.models import RetentionAlert
from loyalty.analytics.service.cohorts import headline_rate, retention_headline
from loyalty.analytics.service.settings import get_settings
from loyalty.db import Page, new_id, unit_of_work

COMPARISONS = (("week", 7), ("month", 30))


def check_retention(session: Session, *, now: dt.datetime | None = None) -> int:
    """Compare 30-day retention now with a week and a month before; record (once per kind and
    day) and publish an alert for each drop of more than ``alert_drop_points`` percentage
    points. Returns how many alerts went out."""
    now = now or clock.now()
    sent = 0
    with unit_of_work(session):
        settings = get_settings(session)
        members, retained = headline_rate(session, now)
        current = rules.rate(retained, members)
        if current is None:
            return 0
        for kind, days in COMPARISONS:
            before_members, before_retained = headline_rate(session, now - dt.timedelta(days=days))
            previous = rules.rate(before_retained, before_members)
            if previous is None:
                continue
            drop = (Decimal(str(previous)) - Decimal(str(current))) * 100
            if drop <= settings.alert_drop_points:
                continue
            day = now.date()
            exists = session.scalar(
                select(RetentionAlert.id).where(
                    RetentionAlert.kind == kind, RetentionAlert.day == day
                )
            )
            if exists is not None:
                continue
            alert = RetentionAlert(
                id=new_id("alr"),
                kind=kind,
                day=day,
                current_rate=Decimal(str(current)),
                previous_rate=Decimal(str(previous)),
                drop_points=drop.quantize(Decimal("0.01")),
                members=members,
                created_at=now,
            )
            session.add(alert)
            session.flush()
            bus.publish(
                session,
                RetentionDropped(
                    occurred_at=now,
                    alert_id=alert.id,
                    kind=kind,
                    day=day,
                    current_rate=alert.current_rate,
                    previous_rate=alert.previous_rate,
                    drop_points=alert.drop_points,
                    members=members,
                ),
            )
            sent += 1
    return sent


def list_alerts(session: Session, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """The alerts, newest first (a page), with the headline retention now. Reads only."""
    query = select(RetentionAlert).order_by(RetentionAlert.id.desc())
    if cursor is not None:
        query = query.where(RetentionAlert.id < cursor)
    rows = list(session.scalars(query.limit(limit + 1)))
    page = Page(items=rows[:limit], next_cursor=rows[limit - 1].id if len(rows) > limit else None)
    return {
        "headline": retention_headline(session),
        "threshold_points": float(get_settings(session).alert_drop_points),
        "items": [_alert(alert) for alert in page.items],
        "next_cursor": page.next_cursor,
    }


def _alert(alert: RetentionAlert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "metric": "retention_30_day",
        "compared_with": alert.kind,
        "day": alert.day,
        "current_rate": float(alert.current_rate),
        "previous_rate": float(alert.previous_rate),
        "drop_points": float(alert.drop_points),
        "members": alert.members,
        "created_at": alert.created_at,
    }
