"""The churn warning: a flag raised once (with a ``member.at_risk`` event), cleared when the
member comes back, closed as churned when they do not; win-back rate and precision."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.analytics import service
from loyalty.clock import FrozenClock
from loyalty.events.models import OutboxEvent
from tests.analytics.conftest import DAY, NOW, enrol, order


def at_risk_events(session: Session, member_id: str) -> int:
    return int(
        session.scalar(
            select(func.count()).where(
                OutboxEvent.type == "member.at_risk", OutboxEvent.member_id == member_id
            )
        )
        or 0
    )


def test_a_drop_is_flagged_once_and_cleared_when_the_member_comes_back(
    session: Session, now: FrozenClock
) -> None:
    member = enrol(session, "slipping", NOW - 200 * DAY)
    # Three orders in the 90 days before the last 30 (1 per 30 days), none since.
    for index, days in enumerate((100, 80, 50)):
        order(session, member, f"S-{index}", 1000, NOW - days * DAY)
    first = service.recompute(session, now=NOW)
    assert first["members flagged at risk"] == 1
    assert service.recompute(session, now=NOW).get("members flagged at risk", 0) == 0
    assert at_risk_events(session, member) == 1
    report = service.at_risk(session)
    assert (report["open"], report["raised"]) == (1, 1)
    flag = report["items"][0]
    assert (flag["member_id"], flag["reason"], flag["recent_activity"]) == (
        member,
        "activity_drop",
        0,
    )
    assert flag["baseline_activity"] == 1.0
    event = session.scalars(select(OutboxEvent).where(OutboxEvent.type == "member.at_risk")).one()
    assert event.data["reason"] == "activity_drop" and event.data["flag_id"] == flag["id"]

    # Five days later the member orders again: the flag closes as won back.
    now.advance(5 * DAY)
    order(session, member, "S-back", 1000, NOW + 5 * DAY - DAY / 24)
    closed = service.recompute(session, now=NOW + 5 * DAY)
    assert closed["at-risk flags closed"] == 1
    report = service.at_risk(session)
    assert (report["open"], report["won_back"], report["win_back_rate"]) == (0, 1, 1.0)
    assert report["precision"] == 0.0  # the one resolved flag did not churn
    assert service.member_analytics(session, member)["risk"]["outcome"] == "won_back"
    assert at_risk_events(session, member) == 1


def test_a_silent_member_who_stays_away_counts_for_precision(
    session: Session, now: FrozenClock
) -> None:
    member = enrol(session, "sleeper", NOW - 400 * DAY)
    order(session, member, "Z-1", 1000, NOW - 170 * DAY)
    assert service.recompute(session, now=NOW)["members flagged at risk"] == 1
    assert service.at_risk(session, reason="silent")["open"] == 1
    assert service.at_risk(session, reason="activity_drop")["open"] == 0
    # 190 days without activity: churned; the flag closes as churned.
    now.advance(20 * DAY)
    service.recompute(session, now=NOW + 20 * DAY)
    report = service.at_risk(session)
    assert (report["open"], report["churned"], report["precision"]) == (0, 1, 1.0)
    # Not won back within 30 days, and its 30 days are not over: no win-back rate yet.
    assert report["win_back_rate"] is None
    # Still churned the next day: no new flag.
    now.advance(DAY)
    assert service.recompute(session, now=NOW + 21 * DAY).get("members flagged at risk", 0) == 0


def test_new_members_are_not_warned(session: Session, now: FrozenClock) -> None:
    enrol(session, "newcomer", NOW - 3 * DAY)
    assert service.recompute(session, now=NOW).get("members flagged at risk", 0) == 0
