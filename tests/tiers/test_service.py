"""Tier rules through the service layer on PostgreSQL: upgrades with accruals, each metric
and window, reviews at period end, manual assignment, ladder changes applied by the job.
The ledger's invariants are checked after every test (see conftest)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from loyalty import jobs
from loyalty.audit.models import AuditRecord
from loyalty.clock import FrozenClock, use_clock
from loyalty.db import get_database, unit_of_work
from loyalty.errors import InvalidFieldError
from loyalty.ledger import service as ledger_service
from loyalty.members import service as members_service
from loyalty.members.errors import MemberNotFoundError
from loyalty.tiers import service
from loyalty.tiers.errors import (
    NoManualTierError,
    TierExistsError,
    TierInUseError,
    TierLadderOrderError,
    TierNotFoundError,
    TierRankTakenError,
)
from loyalty.tiers.models import MemberTier
from tests.ledger.conftest import order
from tests.tiers.conftest import DAY, START, make_ladder, policy

Member = Callable[..., str]
NOTHING = {
    "tier upgrades": 0,
    "tier downgrades": 0,
    "tier renewals": 0,
    "manual tiers ended": 0,
    "paid tiers ended": 0,
}


def tier_of(session: Session, member_id: str) -> str | None:
    ref = service.current_tiers(session, [member_id]).get(member_id)
    return ref.code if ref else None


def history(session: Session, member_id: str) -> list[tuple[str, str | None, str | None]]:
    page = service.list_history(session, member_id, limit=200)
    return [(c.kind, c.from_code, c.to_code) for c in reversed(page.items)]


def at(clock: FrozenClock, moment: dt.datetime) -> None:
    clock.set(moment)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


# --- the ladder and reads ---------------------------------------------------------------------


def test_without_a_ladder_nobody_has_a_tier(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    order(session, m, 100000)
    assert service.ladder(session) == {}
    assert service.current_tiers(session, [m]) == {}
    assert service.run_due(session) == NOTHING
    view = service.get_member_tier(session, m)
    assert (view.tier, view.source, view.progress) == (None, None, None)


def test_ladder_and_base_tier(session: Session, member: Member, clock: FrozenClock) -> None:
    make_ladder(session)
    assert list(service.ladder(session)) == ["bronze", "silver", "gold"]
    assert service.ladder(session)["gold"] == service.TierRef("gold", "Gold", 3, Decimal("1"))
    m = member()
    assert tier_of(session, m) == "bronze"  # never seen, threshold 0
    view = service.get_member_tier(session, m)
    assert view.source == "computed" and view.since is None and view.until is None
    assert view.progress is not None and view.progress.message == "500 more points to Silver"


def test_without_a_zero_threshold_new_members_have_no_tier(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    make_ladder(session, (("silver", "Silver", 2, 500), ("gold", "Gold", 3, 1000)))
    m = member()
    assert service.current_tiers(session, [m]) == {}
    order(session, m, 49900)
    assert service.current_tiers(session, [m]) == {}
    order(session, m, 100)
    assert tier_of(session, m) == "silver"


@contextmanager
def counting_selects(session: Session) -> Iterator[list[str]]:
    """The SELECT statements run meanwhile."""
    statements: list[str] = []
    engine = session.get_bind()

    def count(*args: object) -> None:
        if str(args[2]).startswith("SELECT"):
            statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_current_tiers_for_many_members_in_two_queries(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    make_ladder(session)
    ids = [member() for _ in range(5)]
    order(session, ids[0], 100000)
    service.current_tiers(session, ids)  # the ladder is read once, then cached
    session.commit()
    with counting_selects(session) as statements:
        tiers = service.current_tiers(session, ids)
    assert {k: v.code for k, v in tiers.items()} == {
        ids[0]: "gold",
        **{i: "bronze" for i in ids[1:]},
    }
    # the configuration's version (the cached ladder is current) and the members' rows
    assert len(statements) <= 2


def test_after_accrual_without_a_ladder_costs_one_query(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    with unit_of_work(session):  # the (empty) ladder is read once, then cached
        service.after_accrual(session, member_id=m, now=clock.now(), actor=None)
    with unit_of_work(session), counting_selects(session) as statements:
        service.after_accrual(session, member_id=m, now=clock.now(), actor=None)
    assert len(statements) == 1  # the configuration's version: the cached ladder is current


# --- upgrades on accrual ----------------------------------------------------------------------


def test_accrual_upgrades_at_once_in_its_own_transaction(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    make_ladder(session)
    m = member()
    order(session, m, 60000)  # 600 points, still pending: earned all the same
    assert tier_of(session, m) == "silver"
    order(session, m, 50000)
    assert tier_of(session, m) == "gold"
    assert history(session, m) == [("upgrade", "bronze", "silver"), ("upgrade", "silver", "gold")]
    change = service.list_history(session, m).items[0]
    assert (change.at, change.metric_value) == (START, 1100)
    # Lifetime window: no review.
    view = service.get_member_tier(session, m)
    assert (view.since, view.until, view.value, view.progress) == (START, None, 1100, None)


def test_after_accrual_inside_a_unit_of_work(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    order(session, m, 60000)  # before any ladder: no tier work
    make_ladder(session)
    assert tier_of(session, m) == "bronze"
    # Called directly, as the ledger does from inside its unit of work.
    with unit_of_work(session):
        service.after_accrual(session, member_id=m, now=clock.now(), actor="cli_x")
        service.after_accrual(session, member_id=m, now=clock.now(), actor="cli_x")
    assert tier_of(session, m) == "silver"
    [change] = service.list_history(session, m).items
    assert (change.kind, change.actor, change.metric_value) == ("upgrade", "cli_x", 600)


def test_an_upgrade_that_fails_rolls_back_with_the_accrual(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    make_ladder(session)
    m = member()
    with pytest.raises(RuntimeError), unit_of_work(session):
        service.after_accrual(session, member_id=m, now=clock.now(), actor=None)
        raise RuntimeError("the accrual failed after the upgrade")
    assert session.get(MemberTier, m) is None


def test_metric_spend(session: Session, member: Member, clock: FrozenClock) -> None:
    make_ladder(session)
    policy(session, metric="spend")
    m = member()
    order(session, m, 49999)  # 499.99 USD: 499 major units
    assert tier_of(session, m) == "bronze"
    order(session, m, 100)
    assert tier_of(session, m) == "silver"
    assert service.get_member_tier(session, m).value == 500


def test_metric_orders(session: Session, member: Member, clock: FrozenClock) -> None:
    make_ladder(session, (("bronze", "Bronze", 1, 0), ("silver", "Silver", 2, 2)))
    policy(session, metric="orders")
    m = member()
    order(session, m, 100)
    assert tier_of(session, m) == "bronze"
    order(session, m, 100)
    assert tier_of(session, m) == "silver"
    view = service.get_member_tier(session, m)
    assert (view.metric, view.value, view.progress) == ("orders", 2, None)


def test_rolling_window_forgets_activity_older_than_twelve_months(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    make_ladder(session)
    policy(session, window="rolling_12_months")
    m = member()
    order(session, m, 40000)
    clock.advance(366 * DAY)
    order(session, m, 20000)
    assert tier_of(session, m) == "bronze"  # only 200 points in the last 12 months
    order(session, m, 30000)
    assert tier_of(session, m) == "silver"
    view = service.get_member_tier(session, m)
    assert view.until == utc(2028, 3, 11, 12)  # twelve months later
    assert view.progress is not None and view.progress.deadline is None


def test_calendar_year_window_starts_again_on_1_january(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    make_ladder(session)
    policy(session, window="calendar_year")
    m = member()
    at(clock, utc(2026, 12, 20))
    order(session, m, 40000)
    at(clock, utc(2027, 1, 2))
    order(session, m, 20000)
    assert tier_of(session, m) == "bronze"
    view = service.get_member_tier(session, m)
    assert view.value == 200
    assert view.progress is not None
    assert view.progress.message == "300 more points to Silver by 31 Dec 2027"
    assert view.progress.deadline == dt.date(2027, 12, 31)


# --- reviews ----------------------------------------------------------------------------------


def gold_in_2026(session: Session, member: Member, clock: FrozenClock, **changes: object) -> str:
    make_ladder(session)
    policy(session, window="calendar_year", **changes)
    m = member()
    order(session, m, 100000)
    assert tier_of(session, m) == "gold"
    return m


def test_downgrade_one_step_at_period_end_after_grace(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = gold_in_2026(session, member, clock, grace_days=30)
    assert service.get_member_tier(session, m).until == utc(2027, 1, 31)
    at(clock, utc(2027, 1, 30, 23, 59))
    assert service.run_due(session) == NOTHING
    assert tier_of(session, m) == "gold"
    at(clock, utc(2027, 1, 31))
    assert service.run_due(session) == {**NOTHING, "tier renewals": 1}  # 1000 points in 2026
    assert history(session, m)[-1] == ("renewal", "gold", "gold")
    # 2027 had no activity: the review of 2027 takes one step down, and then another.
    at(clock, utc(2028, 1, 31))
    assert service.run_due(session) == {**NOTHING, "tier downgrades": 1}
    assert tier_of(session, m) == "silver"
    view = service.get_member_tier(session, m)
    assert (view.since, view.until) == (utc(2028, 1, 1), utc(2029, 1, 31))
    at(clock, utc(2029, 2, 1))
    assert service.run_due(session)["tier downgrades"] == 1
    assert tier_of(session, m) == "bronze"
    assert service.get_member_tier(session, m).until is None  # the base tier is kept at 0
    assert [h[0] for h in history(session, m)] == ["upgrade", "renewal", "downgrade", "downgrade"]


def test_recompute_goes_straight_to_the_qualified_tier(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = gold_in_2026(session, member, clock, downgrade="recompute")
    at(clock, utc(2027, 1, 1))
    service.run_due(session)  # renewed for 2027
    at(clock, utc(2028, 1, 1))
    assert service.run_due(session)["tier downgrades"] == 1
    assert tier_of(session, m) == "bronze"
    assert history(session, m)[-1] == ("downgrade", "gold", "bronze")


def test_a_late_job_reviews_every_period_one_step_each(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = gold_in_2026(session, member, clock)
    at(clock, utc(2030, 6, 1))
    counts = service.run_due(session)
    assert counts == {**NOTHING, "tier renewals": 1, "tier downgrades": 2}
    assert tier_of(session, m) == "bronze"


def test_activity_in_the_grace_period_keeps_the_tier(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    make_ladder(session)
    policy(session, window="calendar_year", grace_days=30)
    m = member()
    at(clock, utc(2026, 11, 1))
    order(session, m, 60000)
    assert tier_of(session, m) == "silver"
    at(clock, utc(2027, 1, 31))
    service.run_due(session)  # 600 in 2026: renewed
    at(clock, utc(2028, 1, 15))
    order(session, m, 55000)  # nothing in 2027, but 550 in the grace days of 2028
    at(clock, utc(2028, 1, 31))
    assert service.run_due(session)["tier renewals"] == 1
    assert tier_of(session, m) == "silver"


def test_retain_threshold_keeps_a_tier_below_its_threshold(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    make_ladder(session)
    service.update_tier(session, code="silver", changes={"retain_threshold": 300}, actor="t")
    policy(session, window="rolling_12_months")
    m = member()
    order(session, m, 60000)
    service.run_due(session)
    clock.advance(366 * DAY)
    order(session, m, 30000)  # 300 in the second year
    clock.advance(365 * DAY)
    service.run_due(session)
    assert tier_of(session, m) == "silver"
    assert [h[0] for h in history(session, m)] == ["upgrade", "renewal", "renewal"]
    # Another year without activity: 0 is below the retain threshold.
    clock.advance(366 * DAY)
    assert service.run_due(session)["tier downgrades"] == 1
    assert tier_of(session, m) == "bronze"


def test_run_due_is_idempotent(session: Session, member: Member, clock: FrozenClock) -> None:
    m = gold_in_2026(session, member, clock)
    others = [member() for _ in range(3)]
    service.update_tier(session, code="gold", changes={"threshold": 900}, actor="t")
    at(clock, utc(2028, 3, 1))
    first = service.run_due(session, batch_size=2)
    assert first["tier renewals"] + first["tier downgrades"] >= 1
    seen = history(session, m)
    assert service.run_due(session, batch_size=2) == NOTHING
    assert history(session, m) == seen
    assert all(tier_of(session, o) == "bronze" for o in others)


# --- ladder and policy changes ----------------------------------------------------------------


def test_ladder_change_is_applied_by_the_job_only(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    make_ladder(session)
    m = member()
    order(session, m, 60000)
    assert tier_of(session, m) == "silver"
    service.update_tier(session, code="gold", changes={"threshold": 600}, actor="t")
    assert tier_of(session, m) == "silver"  # not re-evaluated in the request
    assert service.run_due(session) == {**NOTHING, "tier upgrades": 1}
    assert tier_of(session, m) == "gold"
    # Raising a threshold never downgrades outside a review.
    service.update_tier(session, code="gold", changes={"threshold": 5000}, actor="t")
    assert service.run_due(session) == NOTHING
    assert tier_of(session, m) == "gold"


def test_a_new_ladder_picks_up_members_who_earned_before_it(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    rich, poor = member(), member()
    order(session, rich, 120000)
    order(session, poor, 1000)
    make_ladder(session)
    assert tier_of(session, rich) == "bronze"
    assert service.run_due(session) == {**NOTHING, "tier upgrades": 1}
    assert (tier_of(session, rich), tier_of(session, poor)) == ("gold", "bronze")
    assert history(session, rich) == [("upgrade", "bronze", "gold")]
    assert history(session, poor) == []
    assert service.run_due(session) == NOTHING


def test_policy_change_moves_review_dates_but_never_into_the_past(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    make_ladder(session)
    m = member()
    order(session, m, 60000)  # silver since 2026-03-10, lifetime: no review
    at(clock, utc(2027, 6, 1))
    policy(session, window="calendar_year", grace_days=10)
    assert service.run_due(session) == NOTHING
    view = service.get_member_tier(session, m)
    assert (view.since, view.until) == (utc(2027, 1, 1), utc(2028, 1, 11))


def test_tier_crud_is_validated_and_audited(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    make_ladder(session)
    with pytest.raises(TierExistsError):
        service.create_tier(session, code="gold", name="G", rank=9, threshold=9000, actor="t")
    with pytest.raises(TierRankTakenError):
        service.create_tier(session, code="plat", name="P", rank=3, threshold=9000, actor="t")
    with pytest.raises(TierLadderOrderError):
        service.create_tier(session, code="plat", name="P", rank=4, threshold=900, actor="t")
    with pytest.raises(InvalidFieldError):
        service.create_tier(session, code="Plat!", name="P", rank=4, threshold=9000, actor="t")
    with pytest.raises(InvalidFieldError):
        service.create_tier(
            session,
            code="plat",
            name="P",
            rank=4,
            threshold=9000,
            points_multiplier="0.5",
            actor="t",
        )
    with pytest.raises(TierNotFoundError):
        service.update_tier(session, code="nope", changes={"name": "x"}, actor="t")
    version = service.get_policy(session).ladder_version
    service.update_tier(session, code="gold", changes={"name": "Golden"}, actor="t")
    assert service.get_policy(session).ladder_version == version  # no re-evaluation needed
    tier = service.create_tier(
        session,
        code="plat",
        name="Platinum",
        rank=4,
        threshold=5000,
        points_multiplier=Decimal("1.5"),
        benefits="Lounge",
        actor="t",
    )
    assert tier.points_multiplier == Decimal("1.5000")
    assert service.get_policy(session).ladder_version == version + 1
    service.delete_tier(session, code="plat", actor="admin")
    with pytest.raises(TierNotFoundError):
        service.get_tier(session, "plat")
    actions = session.execute(
        select(AuditRecord.action, AuditRecord.entity_id).where(AuditRecord.entity_type == "tier")
    ).all()
    assert ("updated", "gold") in actions and ("deleted", "plat") in actions
    assert sum(1 for a in actions if a[0] == "created") == 4


def test_a_tier_someone_holds_cannot_be_deleted(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    make_ladder(session)
    m = member()
    with pytest.raises(TierInUseError):
        service.delete_tier(session, code="bronze", actor="t")  # m holds it implicitly
    service.assign_tier(session, member_id=m, tier="gold", reason="VIP", actor="t")
    with pytest.raises(TierInUseError) as raised:
        service.delete_tier(session, code="gold", actor="t")
    assert raised.value.data == {"tier": "gold", "members": 1}
    order(session, m, 60000)
    with pytest.raises(TierInUseError):
        service.delete_tier(session, code="silver", actor="t")


def test_policy_changes_are_audited(session: Session, clock: FrozenClock) -> None:
    policy(session, metric="spend", grace_days=5)
    settings = service.get_policy(session)
    assert (settings.metric, settings.window, settings.grace_days) == ("spend", "lifetime", 5)
    record = session.scalar(select(AuditRecord).where(AuditRecord.entity_type == "tier_policy"))
    assert record is not None and record.after is not None and record.after["metric"] == "spend"


# --- manual assignment ------------------------------------------------------------------------


def test_manual_tier_wins_until_it_ends(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    make_ladder(session)
    m = member()
    order(session, m, 60000)
    view = service.assign_tier(
        session, member_id=m, tier="gold", reason="Influencer", until=START + 10 * DAY, actor="adm"
    )
    assert (view.source, view.tier.code if view.tier else None) == ("manual", "gold")
    assert (view.until, view.reason) == (START + 10 * DAY, "Influencer")
    assert tier_of(session, m) == "gold"
    clock.advance(10 * DAY)
    assert tier_of(session, m) == "silver"  # reads treat the passed end as ended
    assert service.run_due(session) == {**NOTHING, "manual tiers ended": 1}
    assert service.run_due(session) == NOTHING
    assert history(session, m) == [
        ("upgrade", "bronze", "silver"),
        ("manual", "silver", "gold"),
        ("manual_ended", "gold", "silver"),
    ]
    record = session.scalar(select(AuditRecord).where(AuditRecord.entity_type == "member_tier"))
    assert record is not None and (record.action, record.reason) == ("assigned", "Influencer")


def test_manual_tier_can_be_ended_early(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    make_ladder(session)
    m = member()
    with pytest.raises(NoManualTierError):
        service.end_assignment(session, member_id=m, actor="adm")
    service.assign_tier(session, member_id=m, tier="silver", reason="Apology", actor="adm")
    order(session, m, 120000)  # the computed tier keeps moving underneath
    assert tier_of(session, m) == "silver"
    view = service.end_assignment(session, member_id=m, actor="adm")
    assert (view.source, view.tier.code if view.tier else None) == ("computed", "gold")
    with pytest.raises(NoManualTierError):
        service.end_assignment(session, member_id=m, actor="adm")


def test_manual_assignment_is_checked(session: Session, member: Member, clock: FrozenClock) -> None:
    make_ladder(session)
    m = member()
    with pytest.raises(MemberNotFoundError):
        service.assign_tier(session, member_id="mem_nope", tier="gold", reason="x", actor="a")
    with pytest.raises(InvalidFieldError) as unknown:
        service.assign_tier(session, member_id=m, tier="diamond", reason="x", actor="a")
    assert unknown.value.field == "tier"
    with pytest.raises(InvalidFieldError) as past:
        service.assign_tier(session, member_id=m, tier="gold", reason="x", until=START, actor="a")
    assert past.value.field == "until"


def test_history_pages_newest_first(session: Session, member: Member, clock: FrozenClock) -> None:
    make_ladder(session)
    m = member()
    for code in ("silver", "gold", "silver"):
        service.assign_tier(session, member_id=m, tier=code, reason="r", actor="a")
    first = service.list_history(session, m, limit=2)
    assert [c.to_code for c in first.items] == ["silver", "gold"]
    assert first.next_cursor is not None
    rest = service.list_history(session, m, limit=2, cursor=first.next_cursor)
    assert [c.to_code for c in rest.items] == ["silver"] and rest.next_cursor is None
    with pytest.raises(MemberNotFoundError):
        service.list_history(session, "mem_nope")


def test_the_tier_lifecycle_on_sqlite(sqlite_app: Flask) -> None:
    frozen = FrozenClock(START)
    use_clock(sqlite_app, frozen)
    with sqlite_app.app_context():
        session = get_database(sqlite_app).sessionmaker()
        try:
            early, _ = members_service.enroll_member(session, external_id="early")
            ledger_service.accrue_order(
                session,
                client_id="c",
                order_id="e",
                member_id=early.id,
                total=120000,
                currency="USD",
            )
            make_ladder(session)
            policy(session, window="calendar_year")
            assert service.run_due(session) == {**NOTHING, "tier upgrades": 1}
            late, _ = members_service.enroll_member(session, external_id="late")
            ledger_service.accrue_order(
                session,
                client_id="c",
                order_id="l",
                member_id=late.id,
                total=60000,
                currency="USD",
            )
            service.assign_tier(
                session, member_id=late.id, tier="gold", reason="r", until=START + DAY, actor="a"
            )
            assert tier_of(session, late.id) == "gold"
            frozen.set(utc(2028, 1, 1))
            counts = service.run_due(session)
            assert counts == {
                "tier upgrades": 0,
                "tier downgrades": 2,  # each: 2026 renewed, 2027 had nothing
                "tier renewals": 2,
                "manual tiers ended": 1,
                "paid tiers ended": 0,
            }
            assert service.run_due(session) == NOTHING
            assert {
                k: v.code for k, v in service.current_tiers(session, [early.id, late.id]).items()
            } == {early.id: "silver", late.id: "bronze"}
        finally:
            session.close()


def test_loyalty_jobs_run_does_the_tier_work(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    order(session, m, 120000)
    make_ladder(session)
    report = jobs.run_due(session)
    assert report.counts["tier upgrades"] == 1
    assert "tier upgrades: 1" in report.summary()
    assert tier_of(session, m) == "gold"
