"""Retention alerts (once per kind and day, as ``analytics.alert`` events) and the tier what-if."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.analytics import service
from loyalty.clock import FrozenClock
from loyalty.errors import InvalidFieldError
from loyalty.events.models import OutboxEvent
from loyalty.tiers import service as tiers
from tests.analytics.conftest import DAY, NOW, enrol, event, order


def test_a_drop_in_30_day_retention_alerts_once_per_comparison(
    session: Session, now: FrozenClock
) -> None:
    # X joined 65 days ago and came back on day 10; Y joined 45 days ago and never did.
    x = enrol(session, "x", NOW - 65 * DAY)
    enrol(session, "y", NOW - 45 * DAY)
    event(session, x, "x-check", "check_in", NOW - 55 * DAY)
    headline = service.retention_headline(session)
    # Now: Y alone (0%); a week ago: X and Y (50%); a month ago: X alone (100%).
    assert [headline[k]["rate"] for k in ("current", "week_ago", "month_ago")] == [0.0, 0.5, 1.0]
    assert service.check_retention(session) == 2
    assert service.check_retention(session) == 0
    alerts = service.list_alerts(session)
    assert sorted((a["compared_with"], a["drop_points"]) for a in alerts["items"]) == [
        ("month", 100.0),
        ("week", 50.0),
    ]
    sent = session.scalar(select(func.count()).where(OutboxEvent.type == "analytics.alert"))
    assert sent == 2


def test_no_alert_below_the_threshold(session: Session, now: FrozenClock) -> None:
    service.update_settings(session, changes={"alert_drop_points": 60}, actor="test")
    x = enrol(session, "x", NOW - 65 * DAY)
    enrol(session, "y", NOW - 45 * DAY)
    event(session, x, "x-check", "check_in", NOW - 55 * DAY)
    # 50 points against a week ago stays under 60; 100 against a month ago does not.
    assert service.check_retention(session) == 1
    assert service.list_alerts(session)["items"][0]["compared_with"] == "month"


def ladder(session: Session) -> None:
    for code, rank, threshold in (("bronze", 1, 0), ("silver", 2, 500), ("gold", 3, 1000)):
        tiers.create_tier(
            session,
            code=code,
            name=code.title(),
            rank=rank,
            threshold=threshold,
            points_multiplier="1",
            actor="test",
        )


def test_tier_what_if_counts_and_lists_the_movers(session: Session, now: FrozenClock) -> None:
    ladder(session)
    members = {}
    for name, total in (("p1", 60000), ("p2", 30000), ("p3", 120000)):
        members[name] = enrol(session, name, NOW - 30 * DAY)
        order(session, members[name], f"{name}-1", total, NOW - DAY)
    # 600, 300 and 1200 points: silver, bronze, gold.
    result = service.tier_what_if(session, thresholds={"silver": 250, "gold": 1300})
    assert [(t["tier"], t["members_now"], t["members_proposed"]) for t in result["tiers"]] == [
        ("bronze", 1, 0),
        ("silver", 1, 3),
        ("gold", 1, 0),
    ]
    assert (result["moving_up"], result["moving_down"]) == (1, 1)
    movers = {
        m["external_id"]: (m["from_tier"], m["to_tier"], m["direction"]) for m in result["items"]
    }
    assert movers == {"p2": ("bronze", "silver", "up"), "p3": ("gold", "silver", "down")}
    # Pages of one, by member id.
    first = service.tier_what_if(session, thresholds={"silver": 250, "gold": 1300}, limit=1)
    second = service.tier_what_if(
        session, thresholds={"silver": 250, "gold": 1300}, limit=1, cursor=first["next_cursor"]
    )
    assert len(first["items"]) == len(second["items"]) == 1
    assert second["next_cursor"] is None
    assert {first["items"][0]["external_id"], second["items"][0]["external_id"]} == {"p2", "p3"}
    # Nothing was saved.
    assert tiers.get_tier(session, "silver").threshold == 500
    # Another metric: orders (one each) qualify nobody above bronze at these thresholds.
    by_orders = service.tier_what_if(session, metric="orders")
    assert by_orders["moving_down"] == 2


def test_tier_what_if_refuses_bad_ladders(session: Session, now: FrozenClock) -> None:
    ladder(session)
    with pytest.raises(InvalidFieldError) as unknown:
        service.tier_what_if(session, thresholds={"platinum": 10})
    assert unknown.value.field == "thresholds/platinum"
    with pytest.raises(InvalidFieldError):
        service.tier_what_if(session, thresholds={"silver": 1500})
