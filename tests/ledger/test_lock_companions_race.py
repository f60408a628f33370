"""The wallet lock's companions under writers that hold the wallet's lock and move no
balance (a check-in that earns nothing, the refund of an order that earned nothing), or that
write what a companion reads while an order waits (a manager's tier, the tier job): such a
writer still writes the wallet's row (`ledger.service._core._written`), so the row an order's
lock statement locks is not the one its snapshot saw, and the order reads again after its
lock. It must be priced as when it read these after its lock (before the companions)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event
from sqlalchemy.orm import Session

from loyalty import demo
from loyalty.clock import FrozenClock
from loyalty.community import service as community_service
from loyalty.earning import service as earning_service
from loyalty.ledger import service
from loyalty.members import service as members_service
from loyalty.tiers import service as tiers_service
from tests.ledger.conftest import CLIENT
from tests.support import behind_a_lock, in_the_lock_gap, we_miss_you

pytestmark = pytest.mark.concurrency


def _accrue(session: Session, member_id: str, order_id: str, total: int = 1000) -> Any:
    return service.accrue_order(
        session,
        client_id=CLIENT,
        order_id=order_id,
        member_id=member_id,
        total=total,
        currency="USD",
    ).body


def test_an_order_waiting_for_a_check_in_sees_the_member_active_again(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """A check-in that earns nothing locks the wallet, records the event (activity) and
    commits, moving no balance. The order that waited for it is priced after it: the member
    is active, no welcome-back bonus."""
    session = new_session()
    member, _ = members_service.enroll_member(session, external_id="silent")
    other, _ = members_service.enroll_member(session, external_id="other")
    _accrue(session, member.id, "long-ago")
    clock.advance(dt.timedelta(days=150))  # silent: no activity for 90 to 180 days
    we_miss_you(session, clock.now())
    _accrue(session, other.id, "warm")  # the campaigns in this process's cache
    checked_in, back = behind_a_lock(
        app,
        new_session,
        lambda s: community_service.check_in(s, member_id=member.id),
        lambda s: _accrue(s, member.id, "back"),
    )
    assert isinstance(checked_in, service.Replayable), checked_in
    assert checked_in.body["points"] == 0  # its wallet row unchanged
    assert isinstance(back, dict), back
    # The member checked in before the order's lock: active, no welcome-back bonus.
    assert back["points"] == 10, back


def test_an_order_waiting_for_the_lock_is_priced_with_a_tier_assigned_meanwhile(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """A manager gives the member Gold by hand (a write of the tier row only) while the
    order waits for the wallet's lock, held by a check-in that earns nothing. The order is
    priced after the assignment committed: with Gold."""
    session = new_session()
    demo.seed_programme(session)  # Gold x1.25
    member, _ = members_service.enroll_member(session, external_id="tiered")
    other, _ = members_service.enroll_member(session, external_id="other")
    _accrue(session, member.id, "first")  # the wallet exists
    _accrue(session, other.id, "warm")  # the ladder in this process's cache
    checked_in, after = behind_a_lock(
        app,
        new_session,
        lambda s: community_service.check_in(s, member_id=member.id),
        lambda s: _accrue(s, member.id, "after", 10000),
        meanwhile=lambda: tiers_service.assign_tier(
            new_session(), member_id=member.id, tier="gold", reason="VIP", actor="manager"
        ),
    )
    assert isinstance(checked_in, service.Replayable), checked_in
    assert isinstance(after, dict), after
    assert after["points"] == 125, after  # 100 x 1.25
    assert "Gold" in after["description"], after


def test_an_order_waiting_for_the_refund_of_an_order_that_earned_nothing_sees_it_refunded(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """The member's last activity is an order of gift cards (no points); its refund in full,
    which holds the wallet's lock, makes it no activity (the member is silent again), moving
    no balance. The order that waited is priced after it: welcome-back bonus."""
    session = new_session()
    ledger_settings = {"excluded_categories": ["gift-cards"]}
    earning_service.update_earning_settings(session, changes=ledger_settings, actor="t")
    member, _ = members_service.enroll_member(session, external_id="silent")
    other, _ = members_service.enroll_member(session, external_id="other")
    _accrue(session, member.id, "long-ago")
    clock.advance(dt.timedelta(days=150))  # silent: no activity for 90 to 180 days
    card = {"sku": "card", "category": "gift-cards", "quantity": 1, "unit_price": 1000}
    gift = service.accrue_order(
        session,
        client_id=CLIENT,
        order_id="gift",
        member_id=member.id,
        total=1000,
        currency="USD",
        items=[card],
    ).body
    assert gift["points"] == 0
    we_miss_you(session, clock.now())
    _accrue(session, other.id, "warm")  # the campaigns in this process's cache
    refunded, back = behind_a_lock(
        app,
        new_session,
        lambda s: service.refund_order(
            s, client_id=CLIENT, order_id="gift", refund_id="gift-back", amount=1000
        ),
        lambda s: _accrue(s, member.id, "back"),
    )
    assert isinstance(refunded, service.Replayable), refunded
    assert refunded.body["points_reversed"] == 0
    assert isinstance(back, dict), back
    # The gift cards refunded in full are no activity: silent, welcome-back bonus.
    assert back["points"] == 110, back


def test_an_order_waiting_for_the_lock_while_the_job_downgrades_moves_the_member_back_up(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """Gold on a calendar year's points; a year without points ends. The tier job's review
    moves the member down to Silver while an order of theirs waits for the wallet's lock
    (held by a check-in that earns nothing). The order is priced with Silver and its points
    qualify the member for Gold again at once."""
    session = new_session()
    demo.seed_programme(session)  # Silver x1.1 from 300 points, Gold x1.25 from 700
    tiers_service.update_policy(
        session,
        changes={"window": "calendar_year", "grace_days": 0, "downgrade": "one_step"},
        actor="t",
    )
    member, _ = members_service.enroll_member(session, external_id="gold")
    other, _ = members_service.enroll_member(session, external_id="other")
    _accrue(session, member.id, "first", 80000)  # 800 points in 2026: Gold
    tiers_service.run_due(new_session())
    clock.set(dt.datetime(2027, 1, 2, 12, tzinfo=dt.UTC))
    tiers_service.run_due(new_session())  # 2026 reviewed: Gold renewed for 2027
    clock.set(dt.datetime(2028, 1, 2, 12, tzinfo=dt.UTC))  # no points in 2027
    _accrue(session, other.id, "warm")  # the ladder in this process's cache
    assert tiers_service.get_member_tier(new_session(), member.id).tier.code == "gold"
    downgraded: dict[str, int] = {}
    checked_in, after = behind_a_lock(
        app,
        new_session,
        lambda s: community_service.check_in(s, member_id=member.id),
        lambda s: _accrue(s, member.id, "after", 70000),
        meanwhile=lambda: downgraded.update(tiers_service.run_due(new_session())),
    )
    assert downgraded["tier downgrades"] == 1, downgraded
    assert isinstance(checked_in, service.Replayable), checked_in
    assert isinstance(after, dict), after
    assert after["points"] == 770, after  # 700 x 1.1: Silver when the lock was taken
    # 770 points in 2028: Gold again at once.
    assert tiers_service.get_member_tier(new_session(), member.id).tier.code == "gold"


def test_a_check_in_committed_between_the_orders_snapshot_and_its_lock_counts(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """The order's lock statement takes its snapshot, then sleeps (the filter runs after
    the wallet row was scanned: this stretches the window between the scan and the lock,
    where the laterals run); a check-in locks the wallet, records its event and commits
    meanwhile. The order never waits for the lock, but the wallet row it locks is not the
    one its snapshot saw (the check-in wrote it): the member is priced as active."""
    session = new_session()
    member, _ = members_service.enroll_member(session, external_id="silent")
    other, _ = members_service.enroll_member(session, external_id="other")
    _accrue(session, member.id, "long-ago")
    clock.advance(dt.timedelta(days=150))  # silent
    we_miss_you(session, clock.now())
    _accrue(session, other.id, "warm")  # the campaigns in this process's cache
    checked_in, back = in_the_lock_gap(
        app,
        new_session,
        lambda s: _accrue(s, member.id, "back"),
        lambda: community_service.check_in(new_session(), member_id=member.id),
    )
    assert checked_in.body["points"] == 0
    assert isinstance(back, dict), back
    assert back["points"] == 10, back  # active: no welcome-back bonus


# What an order that waited for its wallet's lock while another order changed the wallet
# sends, with the demo's programme (its tier, stage and caps read with the lock): the lock's
# statement twice (the second, the lock held, reads everything as current), then the
# accrual's own statement. 5 when the order looked for itself and each area read its part
# again after the lock.
WAITED_ORDER = 3


def test_an_order_that_waited_reads_again_in_one_round_trip(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    demo.seed_programme(session)
    member, _ = members_service.enroll_member(session, external_id="hot")
    _accrue(session, member.id, "warm")  # the configuration in this process's cache
    engine = session.get_bind().engine
    waiter: list[int] = []
    sent: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if waiter and threading.get_ident() == waiter[0]:
            if statement.split(None, 1)[0].upper() not in {"SAVEPOINT", "RELEASE", "ROLLBACK"}:
                sent.append(statement)

    def second(s: Session) -> Any:
        waiter.append(threading.get_ident())
        return _accrue(s, member.id, "second")

    event.listen(engine, "before_cursor_execute", note)
    try:
        first, then = behind_a_lock(
            app, new_session, lambda s: _accrue(s, member.id, "first"), second
        )
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert first["points"] == then["points"] == 10, (first, then)
    assert then["balance"]["pending"] == 30  # warm, first and second
    locks = [s for s in sent if s.startswith("SELECT wallets.id")]
    assert len(locks) == 2, "\n".join(sent)
    assert len(sent) <= WAITED_ORDER, "\n\n".join(sent)
