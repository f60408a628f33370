"""Community through the service layer on PostgreSQL: configuration (audited), events and
their points, caps, check-ins and streaks, badges with levels, windows, refunds and
referrals, leaderboards. The ledger's invariants are checked after every test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.audit.models import AuditRecord
from loyalty.auth import service as auth_service
from loyalty.clock import FrozenClock
from loyalty.community import rules, service
from loyalty.community.errors import (
    BadgeInUseError,
    BadgeNotFoundError,
    EventConflictError,
    EventRuleExistsError,
    EventTypeExistsError,
    EventTypeInUseError,
    EventTypeNotFoundError,
    InvalidEventPropertyError,
    UnknownEventTypeError,
)
from loyalty.community.models import BadgeAward, BadgeProgress
from loyalty.errors import InvalidFieldError
from loyalty.ledger import service as ledger
from loyalty.ledger.errors import EventInFutureError
from loyalty.ledger.models import Entry
from loyalty.members import service as members_service
from loyalty.members.errors import MemberNotFoundError
from loyalty.referrals import service as referrals_service
from tests.community.conftest import (
    DAY,
    START,
    available,
    make_badge,
    make_rule,
    make_type,
    post_event,
)

Member = Callable[..., str]


def audits(session: Session, entity_type: str) -> list[str]:
    rows = session.scalars(
        select(AuditRecord).where(AuditRecord.entity_type == entity_type).order_by(AuditRecord.id)
    )
    return [row.action for row in rows]


def order(session: Session, member_id: str, order_id: str, total: int, **kw: object) -> None:
    ledger.accrue_order(
        session,
        client_id="cli_test",
        order_id=order_id,
        member_id=member_id,
        total=total,
        currency="USD",
        **kw,  # type: ignore[arg-type]
    )


# --- configuration --------------------------------------------------------------------------


def test_event_type_crud_is_audited(session: Session, clock: FrozenClock) -> None:
    created = make_type(session, "recycling.dropped_off", co2_kg="number")
    assert created.properties == {"co2_kg": {"type": "number", "required": True}}
    with pytest.raises(EventTypeExistsError):
        make_type(session, "recycling.dropped_off")
    updated = service.update_event_type(
        session,
        name="recycling.dropped_off",
        changes={"description": "Bottles", "properties": {"co2_kg": {"type": "integer"}}},
        actor="test",
    )
    assert updated.properties["co2_kg"] == {"type": "integer", "required": False}
    assert service.list_event_types(session).items == [updated]
    service.delete_event_type(session, name="recycling.dropped_off", actor="test")
    with pytest.raises(EventTypeNotFoundError):
        service.get_event_type(session, "recycling.dropped_off")
    assert audits(session, "event_type") == ["created", "updated", "deleted"]


def test_an_event_type_in_use_stays(session: Session, member: Member) -> None:
    make_type(session)
    post_event(session, member(), "e1")
    with pytest.raises(EventTypeInUseError):
        service.delete_event_type(session, name="review.posted", actor="test")


def test_a_counted_property_must_stay_numeric(session: Session, clock: FrozenClock) -> None:
    make_type(session, "recycling.dropped_off", co2_kg="number")
    make_rule(
        session, "recycling.dropped_off", points=0, per_unit_property="co2_kg", points_per_unit=2
    )
    with pytest.raises(InvalidEventPropertyError) as caught:
        service.update_event_type(
            session,
            name="recycling.dropped_off",
            changes={"properties": {"co2_kg": {"type": "string"}}},
            actor="test",
        )
    assert caught.value.field == "properties/co2_kg"


def test_event_rule_crud_and_checks(session: Session, clock: FrozenClock) -> None:
    make_type(session, "recycling.dropped_off", co2_kg="number", site="string")
    with pytest.raises(UnknownEventTypeError):
        make_rule(session, "nope")
    with pytest.raises(InvalidEventPropertyError):
        make_rule(session, "recycling.dropped_off", per_unit_property="site", points_per_unit=1)
    with pytest.raises(InvalidFieldError):
        make_rule(session, "recycling.dropped_off", cap=5)
    with pytest.raises(InvalidFieldError):
        make_rule(session, "recycling.dropped_off", points=0)
    rule = make_rule(session, "recycling.dropped_off", cap=5, cap_period="month")
    with pytest.raises(EventRuleExistsError):
        make_rule(session, "recycling.dropped_off")
    changed = service.update_event_rule(
        session, rule_id=rule.id, changes={"points": 3}, actor="test"
    )
    assert changed.points == 3
    service.delete_event_rule(session, rule_id=rule.id, actor="test")
    assert audits(session, "event_rule") == ["created", "updated", "deleted"]


def test_badge_crud_and_checks(session: Session, clock: FrozenClock) -> None:
    make_type(session)
    make_type(session, "recycling.dropped_off", co2_kg="number", site="string")
    with pytest.raises(InvalidFieldError):
        make_badge(session, event_type=None)
    with pytest.raises(InvalidFieldError):
        make_badge(session, rule="spend")  # names an event type
    with pytest.raises(InvalidEventPropertyError):
        make_badge(
            session, rule="property_sum", event_type="recycling.dropped_off", property="site"
        )
    with pytest.raises(InvalidFieldError):
        make_badge(session, levels=[{"name": "a", "threshold": 2}, {"name": "b", "threshold": 1}])
    with pytest.raises(InvalidFieldError):
        make_badge(session, starts_at=START, ends_at=START)
    badge = make_badge(session)
    service.update_badge(session, badge_id=badge.id, changes={"name": "Critic"}, actor="test")
    assert service.get_badge(session, badge.id).name == "Critic"
    service.delete_badge(session, badge_id=badge.id, actor="test")
    with pytest.raises(BadgeNotFoundError):
        service.get_badge(session, badge.id)
    assert audits(session, "badge") == ["created", "updated", "deleted"]


def test_an_awarded_badge_stays(session: Session, member: Member) -> None:
    make_type(session)
    badge = make_badge(session)
    post_event(session, member(), "e1")
    with pytest.raises(BadgeInUseError):
        service.delete_badge(session, badge_id=badge.id, actor="test")


def test_settings_are_audited(session: Session, clock: FrozenClock) -> None:
    assert service.get_settings(session).streak_grace_days == 0
    service.update_settings(session, changes={"streak_grace_days": 2}, actor="test")
    assert service.get_settings(session).streak_grace_days == 2
    assert audits(session, "community_settings") == ["updated"]


# --- events ---------------------------------------------------------------------------------


def test_an_event_credits_its_rule_points(session: Session, member: Member) -> None:
    make_type(session)
    make_rule(session, points=10)
    member_id = member()
    body = post_event(session, member_id, "e1")
    assert body["points"] == 10 and body["badges"] == [] and body["streak"] is None
    assert body["balance"] == {"available": 10, "pending": 0, "held": 0}
    entry = session.scalar(select(Entry).where(Entry.member_id == member_id, Entry.kind == "bonus"))
    assert entry is not None and entry.points == 10


def test_points_per_unit_of_a_property(session: Session, member: Member) -> None:
    make_type(session, "recycling.dropped_off", co2_kg="number")
    make_rule(
        session,
        "recycling.dropped_off",
        points=1,
        per_unit_property="co2_kg",
        points_per_unit="2.5",
    )
    body = post_event(session, member(), "r1", "recycling.dropped_off", co2_kg=3)
    assert body["points"] == 8  # 1 + floor(7.5)


def test_the_same_event_counts_once(session: Session, member: Member) -> None:
    make_type(session)
    make_rule(session)
    member_id = member()
    first = post_event(session, member_id, "e1")
    again = service.record_event(
        session,
        client_id="cli_test",
        event_id="e1",
        member_id=member_id,
        type="review.posted",
        occurred_at=START,
        properties={},
    )
    assert again.created is False and again.body == first
    assert available(session, member_id) == 10
    with pytest.raises(EventConflictError):
        post_event(session, member_id, "e1", at=START - DAY)
    # Event ids are per channel: another client of the channel replays, another channel has
    # its own.
    post_event(session, member_id, "e1", client_id="cli_other")
    assert available(session, member_id) == 10
    pos = auth_service.create_channel(session, name="Store POS")
    post_event(session, member_id, "e1", client_id="cli_pos", channel_id=pos.id)
    assert available(session, member_id) == 20


def test_event_validation(session: Session, member: Member) -> None:
    make_type(session, "recycling.dropped_off", co2_kg="number")
    member_id = member()
    with pytest.raises(UnknownEventTypeError):
        post_event(session, member_id, "x", "nope")
    with pytest.raises(InvalidEventPropertyError) as caught:
        post_event(session, member_id, "x", "recycling.dropped_off")
    assert caught.value.field == "properties/co2_kg"
    with pytest.raises(InvalidEventPropertyError) as caught:
        post_event(session, member_id, "x", "recycling.dropped_off", co2_kg=1, extra=1)
    assert caught.value.field == "properties"  # an undeclared key is not named back
    assert "extra" not in caught.value.detail and "co2_kg" in caught.value.detail
    with pytest.raises(EventInFutureError):
        post_event(
            session,
            member_id,
            "x",
            "recycling.dropped_off",
            co2_kg=1,
            at=START + dt.timedelta(minutes=6),
        )
    post_event(
        session,
        member_id,
        "ok",
        "recycling.dropped_off",
        co2_kg=1,
        at=START + dt.timedelta(minutes=4),
    )
    with pytest.raises(MemberNotFoundError):
        post_event(session, "mem_nobody", "y", "recycling.dropped_off", co2_kg=1)


def test_cap_per_month_in_the_member_time_zone(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    clock.set(dt.datetime(2026, 4, 2, tzinfo=dt.UTC))
    make_type(session)
    make_rule(session, points=10, cap=2, cap_period="month")
    member_id = member(timezone="Asia/Tokyo")
    march = dt.datetime(2026, 3, 31, 10, tzinfo=dt.UTC)  # 19:00 on March 31st in Tokyo
    assert post_event(session, member_id, "a", at=march - DAY)["points"] == 10
    assert post_event(session, member_id, "b", at=march - DAY)["points"] == 10
    assert post_event(session, member_id, "c", at=march)["points"] == 0
    april = march + dt.timedelta(hours=5)  # 00:00 on April 1st in Tokyo; still March in UTC
    assert post_event(session, member_id, "d", at=april)["points"] == 10
    assert available(session, member_id) == 30


def test_cap_per_day(session: Session, member: Member, clock: FrozenClock) -> None:
    clock.set(START + 30 * DAY)
    make_type(session)
    make_rule(session, points=5, cap=1, cap_period="day")
    member_id = member()
    points = [
        post_event(session, member_id, f"e{i}", at=START + i * 8 * dt.timedelta(hours=1))["points"]
        for i in range(4)
    ]
    assert points == [5, 0, 5, 0]  # 12:00, 20:00 on the 10th; 04:00, 12:00 on the 11th


# --- check-ins and streaks ------------------------------------------------------------------


def check_in(
    session: Session, member_id: str, at: dt.datetime, event_id: str | None = None
) -> dict[str, object]:
    return service.check_in(
        session, client_id="cli_test", member_id=member_id, occurred_at=at, event_id=event_id
    ).body


def test_check_ins_count_once_per_local_day(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    clock.set(START + 30 * DAY)
    make_type(session, "check_in")
    make_rule(session, "check_in", points=2)
    member_id = member(timezone="America/New_York")
    first = check_in(session, member_id, START)  # 08:00 in New York
    assert first["streak"] == {"current": 1, "longest": 1, "counted": True}
    assert first["points"] == 2
    same_day = check_in(session, member_id, START + dt.timedelta(hours=10))  # 18:00
    assert same_day["streak"] == {"current": 1, "longest": 1, "counted": False}
    assert same_day["points"] == 0
    next_day = check_in(session, member_id, START + dt.timedelta(hours=17))  # 01:00 next day
    assert next_day["streak"] == {"current": 2, "longest": 2, "counted": True}
    assert available(session, member_id) == 4


def test_check_in_without_a_declared_type(session: Session, member: Member) -> None:
    body = check_in(session, member(), START)
    assert body["type"] == "check_in" and body["points"] == 0


def test_grace_days_keep_a_streak(session: Session, member: Member, clock: FrozenClock) -> None:
    clock.set(START + 30 * DAY)
    member_id = member()
    service.update_settings(session, changes={"streak_grace_days": 1}, actor="test")
    check_in(session, member_id, START)
    assert check_in(session, member_id, START + 2 * DAY)["streak"]["current"] == 2  # type: ignore[index]
    assert check_in(session, member_id, START + 5 * DAY)["streak"]["current"] == 1  # type: ignore[index]


def test_streak_badge_milestones_give_points(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    badge = make_badge(
        session,
        name="Regular",
        rule="streak",
        event_type=None,
        levels=[
            {"name": "week", "threshold": 7, "bonus_points": 70},
            {"name": "month", "threshold": 30, "bonus_points": 300},
        ],
    )
    member_id = member()
    awarded = []
    for day in range(7):
        clock.set(START + day * DAY)
        awarded += check_in(session, member_id, START + day * DAY)["badges"]  # type: ignore[operator]
    assert [(a["badge_id"], a["level_name"], a["points"]) for a in awarded] == [
        (badge.id, "week", 70)
    ]
    assert available(session, member_id) == 70
    view = service.member_badges(session, member_id)
    [standing] = view.progress
    assert (standing.value, standing.level, standing.next_level["remaining"]) == (7, 1, 23)  # type: ignore[index]
    clock.set(START + 9 * DAY)  # two days missed: the streak is gone
    [standing] = service.member_badges(session, member_id).progress
    assert standing.value == 0


# --- badges ---------------------------------------------------------------------------------


def test_levels_are_awarded_once_each_with_their_bonus(session: Session, member: Member) -> None:
    make_type(session)
    badge = make_badge(
        session,
        levels=[
            {"name": "bronze", "threshold": 1, "bonus_points": 5},
            {"name": "silver", "threshold": 3, "bonus_points": 20},
            {"name": "gold", "threshold": 5},
        ],
    )
    member_id = member()
    got = [
        [a["level_name"] for a in post_event(session, member_id, f"e{i}")["badges"]]
        for i in range(6)
    ]
    assert got == [["bronze"], [], ["silver"], [], ["gold"], []]
    assert available(session, member_id) == 25
    awards = session.scalars(select(BadgeAward).where(BadgeAward.badge_id == badge.id)).all()
    assert sorted(a.level for a in awards) == [1, 2, 3]


def test_property_sum_badge(session: Session, member: Member) -> None:
    make_type(session, "recycling.dropped_off", co2_kg="number")
    make_badge(
        session,
        name="Planet saver",
        rule="property_sum",
        event_type="recycling.dropped_off",
        property="co2_kg",
        levels=[{"name": "10 kg", "threshold": 10}],
    )
    member_id = member()
    assert post_event(session, member_id, "a", "recycling.dropped_off", co2_kg=6.5)["badges"] == []
    [award] = post_event(session, member_id, "b", "recycling.dropped_off", co2_kg=3.5)["badges"]
    assert award["level_name"] == "10 kg"


def test_a_challenge_counts_only_inside_its_window(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    clock.set(dt.datetime(2026, 11, 25, tzinfo=dt.UTC))
    make_type(session)
    november = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    make_badge(
        session,
        name="November critic",
        starts_at=november,
        ends_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        levels=[{"name": "done", "threshold": 2, "bonus_points": 50}],
    )
    member_id = member()
    assert post_event(session, member_id, "oct", at=november - DAY)["badges"] == []
    assert post_event(session, member_id, "nov1", at=november + DAY)["badges"] == []
    # Reported in the window's time, whenever it arrives.
    assert len(post_event(session, member_id, "nov2", at=november + 2 * DAY)["badges"]) == 1


def test_spend_and_order_badges_and_revocation_on_refund(session: Session, member: Member) -> None:
    spend = make_badge(
        session,
        name="Big spender",
        rule="spend",
        event_type=None,
        revoke_on_refund=True,
        levels=[{"name": "100", "threshold": 100, "bonus_points": 40}],
    )
    orders = make_badge(
        session,
        name="Regular buyer",
        rule="orders",
        event_type=None,
        levels=[{"name": "2", "threshold": 2, "bonus_points": 7}],
    )
    member_id = member()
    order(session, member_id, "o1", 6000)
    order(session, member_id, "o2", 6000)  # $120: spend level reached, 2 orders
    awards = {a.badge_id: a for a in session.scalars(select(BadgeAward))}
    assert set(awards) == {spend.id, orders.id}
    assert available(session, member_id) == 47
    ledger.refund_order(
        session, client_id="cli_test", order_id="o2", refund_id="r1", amount=1000
    )  # $110 left: kept
    assert session.get(BadgeAward, awards[spend.id].id).revoked_at is None  # type: ignore[union-attr]
    ledger.refund_order(
        session, client_id="cli_test", order_id="o2", refund_id="r2", amount=5000
    )  # $60 left: revoked, bonus clawed back
    revoked = session.get(BadgeAward, awards[spend.id].id, populate_existing=True)
    assert revoked is not None and revoked.revoked_at is not None
    assert revoked.points_clawed_back == 40
    assert session.get(BadgeAward, awards[orders.id].id).revoked_at is None  # type: ignore[union-attr]
    assert available(session, member_id) == 7
    view = service.member_badges(session, member_id)
    assert {s.badge_id: s.value for s in view.progress} == {spend.id: 60, orders.id: 1}
    # A revoked level is not given again.
    order(session, member_id, "o3", 9000)
    assert available(session, member_id) == 7


def test_referral_badges_follow_qualified_and_clawed_back_referrals(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    """A real referral: the friend's order activates (the referral qualifies: the badge is
    awarded in that transaction), then is refunded (clawback: the badge is revoked)."""
    referrals_service.update_settings(
        session,
        changes={"enabled": True, "min_order_total": 5000, "referrer_points": 100},
        actor="test",
    )
    make_badge(
        session,
        name="Ambassador",
        rule="referrals",
        event_type=None,
        revoke_on_refund=True,
        levels=[{"name": "first friend", "threshold": 1, "bonus_points": 30}],
    )
    ann = member()
    code = members_service.get_member(session, ann).referral_code
    bob = member(referral_code=code)
    order(session, bob, "friend-1", 6000)
    clock.advance(15 * DAY)
    ledger.settle_wallet(session, wallet_id=_wallet_id(session, bob))
    assert referrals_service.qualified_referrals(session, ann) == 1
    assert available(session, ann) == 100 + 30
    ledger.refund_order(
        session, client_id="cli_test", order_id="friend-1", refund_id="r", amount=6000
    )
    assert referrals_service.qualified_referrals(session, ann) == 0
    [award] = session.scalars(select(BadgeAward).execution_options(populate_existing=True))
    assert award.revoked_at is not None and award.points_clawed_back == 30
    assert available(session, ann) == 0


def _wallet_id(session: Session, member_id: str) -> str:
    wallet = ledger.points_summaries(session, [member_id])[member_id]
    return wallet.id


def test_member_badges_lists_earned_and_progress(session: Session, member: Member) -> None:
    make_type(session)
    badge = make_badge(
        session, levels=[{"name": "bronze", "threshold": 1}, {"name": "silver", "threshold": 4}]
    )
    member_id = member()
    post_event(session, member_id, "e1")
    view = service.member_badges(session, member_id)
    [earned] = view.earned
    assert (earned.badge_id, earned.level, earned.level_name) == (badge.id, 1, "bronze")
    [standing] = view.progress
    assert standing.level == 1
    assert standing.next_level == {
        "level": 2,
        "name": "silver",
        "threshold": 4,
        "remaining": 3,
        "bonus_points": 0,
    }
    with pytest.raises(MemberNotFoundError):
        service.member_badges(session, "mem_nobody")


# --- leaderboards ---------------------------------------------------------------------------


def test_leaderboard_lists_opted_in_members_by_display_name(
    session: Session, member: Member
) -> None:
    make_type(session)
    badge = make_badge(session, levels=[{"name": "bronze", "threshold": 10}])
    ann, bob, cid, dan = member(), member(), member(), member()
    for who, count in ((ann, 3), (bob, 5), (cid, 3), (dan, 9)):
        for i in range(count):
            post_event(session, who, f"{who}-{i}")
    service.set_leaderboard_profile(session, member_id=ann, opted_in=True, display_name="Ann")
    service.set_leaderboard_profile(session, member_id=bob, opted_in=True, display_name="Bob")
    service.set_leaderboard_profile(session, member_id=cid, opted_in=True, display_name="Cid")
    service.set_leaderboard_profile(session, member_id=dan, opted_in=False)
    board = service.leaderboard(session, badge.id)
    assert [(e.rank, e.display_name, e.value) for e in board] == [
        (1, "Bob", 5),
        (2, "Ann", 3),
        (2, "Cid", 3),
    ]
    service.set_leaderboard_profile(session, member_id=bob, opted_in=False)
    assert [e.display_name for e in service.leaderboard(session, badge.id, limit=1)] == ["Ann"]
    assert session.get(BadgeProgress, (badge.id, dan)) is not None
    with pytest.raises(InvalidFieldError):
        service.set_leaderboard_profile(session, member_id=dan, opted_in=True)
    with pytest.raises(BadgeNotFoundError):
        service.leaderboard(session, "bdg_nope")


def test_run_due_has_nothing_to_do(session: Session) -> None:
    assert service.run_due(session) == {}


# --- review findings ------------------------------------------------------------------------


def test_extreme_numbers_are_refused_and_points_per_event_bounded(
    session: Session, member: Member
) -> None:
    make_type(session, "recycling.dropped_off", co2_kg="number", bags="integer")
    make_rule(
        session,
        "recycling.dropped_off",
        points=0,
        per_unit_property="bags",
        points_per_unit="1000000",
    )
    member_id = member()
    for value in (10**400, 10**13, -(10**13)):
        with pytest.raises(InvalidEventPropertyError):
            post_event(
                session, member_id, f"big-{value}", "recycling.dropped_off", co2_kg=value, bags=1
            )
    result = post_event(
        session, member_id, "many-bags", "recycling.dropped_off", co2_kg=1.5, bags=10**12
    )
    assert result["points"] == rules.MAX_EVENT_POINTS


def test_a_check_in_retried_without_a_time_is_the_same_event(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    member_id = member()
    first = service.check_in(session, client_id="cli_test", member_id=member_id, event_id="v-42")
    clock.advance(dt.timedelta(seconds=2))
    again = service.check_in(session, client_id="cli_test", member_id=member_id, event_id="v-42")
    assert (first.created, again.created) == (True, False)
    assert again.body == first.body


def test_a_challenge_gives_streak_levels_only_while_it_runs(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    make_badge(
        session,
        name="February streak",
        rule="streak",
        event_type=None,
        starts_at=START - 40 * DAY,
        ends_at=START - 10 * DAY,
        levels=[{"name": "3 days", "threshold": 3, "bonus_points": 30}],
    )
    member_id = member()
    for day in range(3):
        clock.set(START + day * DAY)
        assert check_in(session, member_id, START + day * DAY)["badges"] == []
    assert available(session, member_id) == 0


def test_a_refund_revokes_every_level_no_longer_reached(session: Session, member: Member) -> None:
    make_badge(
        session,
        name="Big spender",
        rule="spend",
        event_type=None,
        revoke_on_refund=True,
        levels=[
            {"name": "100", "threshold": 100, "bonus_points": 50},
            {"name": "200", "threshold": 200, "bonus_points": 70},
        ],
    )
    member_id = member()
    order(session, member_id, "a", 10000)
    order(session, member_id, "b", 10000)
    assert available(session, member_id) == 120
    ledger.refund_order(session, client_id="cli_test", order_id="a", refund_id="ra", amount=10000)
    levels = {
        a.level: a.revoked_at is not None
        for a in session.scalars(select(BadgeAward).execution_options(populate_existing=True))
    }
    assert levels == {1: False, 2: True}  # level 2 came with order b, but spend is 100 now
    assert available(session, member_id) == 50


def test_streak_leaderboards_count_streaks_as_of_today(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    badge = make_badge(
        session,
        name="Regular",
        rule="streak",
        event_type=None,
        levels=[{"name": "week", "threshold": 7}],
    )
    ann, bob = member(), member()
    for who, name in ((ann, "Ann"), (bob, "Bob")):
        service.set_leaderboard_profile(session, member_id=who, opted_in=True, display_name=name)
    for day in range(5):
        clock.set(START + day * DAY)
        check_in(session, ann, START + day * DAY)
    for day in range(5, 7):
        clock.set(START + day * DAY)
        check_in(session, bob, START + day * DAY)
    # Day 6: Bob's streak is 2; Ann's lapsed on day 5 (no grace), so she is not ranked.
    board = service.leaderboard(session, badge.id)
    assert [(e.rank, e.display_name, e.value) for e in board] == [(1, "Bob", 2)]
