"""An accrual's upgrade written in one statement (PostgreSQL): the member's tier row as the
wallet's lock read it is written only if it is still that version, with the history row and
the tier held. It must leave what the row locked, read again and updated through the ORM
left, and give way to that path whenever the row changed or appeared after the lock read it
(a manager's assignment takes the tier row's lock, not the wallet's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.events.models import OutboxEvent
from loyalty.ledger import service as ledger
from loyalty.members import service as members_service
from loyalty.tiers import service
from loyalty.tiers.models import MemberTier, TierChange
from tests.ledger.conftest import CLIENT, order
from tests.support import in_the_lock_gap
from tests.tiers.conftest import DAY, make_ladder, policy


def _state(session: Session, member_id: str) -> tuple[dict[str, Any], list[Any], list[Any]]:
    """The member's tier row, history and tier events, without what names the member."""
    session.expire_all()
    row = session.get(MemberTier, member_id)
    assert row is not None
    columns = {c.key: getattr(row, c.key) for c in MemberTier.__table__.columns}
    del columns["member_id"]
    changes = session.scalars(
        select(TierChange).where(TierChange.member_id == member_id).order_by(TierChange.id)
    )
    logged = [
        (c.kind, c.from_code, c.to_code, c.metric_value, c.reason, c.at, c.actor) for c in changes
    ]
    told = session.scalars(
        select(OutboxEvent.data)
        .where(OutboxEvent.member_id == member_id, OutboxEvent.type.like("tier.%"))
        .order_by(OutboxEvent.seq)
    )
    events = [{k: v for k, v in data.items() if k != "member_id"} for data in told]
    return columns, logged, events


@pytest.mark.parametrize("window", ["lifetime", "rolling_12_months"])
def test_the_upgrade_in_one_statement_leaves_what_the_locked_row_path_leaves(
    session: Session,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
    window: str,
) -> None:
    """Two members, the same orders at the same moments: the first upgraded by the one
    statement, the second through the row's lock (the one statement switched off). A first
    upgrade (no row yet), a second one, and one under a manual assignment with an end (the
    due moment is the sooner of the review and that end)."""
    make_ladder(session)  # bronze 0, silver 500, gold 1000 points
    policy(session, window=window, grace_days=7)
    first, second = (
        members_service.enroll_member(session, external_id=f"once-{n}")[0].id for n in range(2)
    )

    def steps(member_id: str) -> None:
        order(session, member_id, 60000, order_id=f"{member_id}-silver")
        clock.advance(DAY)
        order(session, member_id, 50000, order_id=f"{member_id}-gold")
        clock.advance(DAY)

    start = clock.now()
    steps(first)
    clock.set(start)
    with monkeypatch.context() as patched:
        patched.setattr(service, "_move_up_at_once", lambda *args: False)
        steps(second)
    assert _state(session, first) == _state(session, second)
    assert _state(session, first)[0]["tier_code"] == "gold"

    # Under a manual assignment that ends: a third member upgraded with it, both ways.
    third, fourth = (
        members_service.enroll_member(session, external_id=f"once-m{n}")[0].id for n in range(2)
    )
    start = clock.now()
    for member_id, at_once in ((third, True), (fourth, False)):
        clock.set(start)
        service.assign_tier(
            session,
            member_id=member_id,
            tier="bronze",
            reason="trial",
            until=start + 3 * DAY,
            actor="manager",
        )
        with monkeypatch.context() as patched:
            if not at_once:
                patched.setattr(service, "_move_up_at_once", lambda *args: False)
            steps(member_id)
    third_state, fourth_state = _state(session, third), _state(session, fourth)
    assert third_state == fourth_state
    assert third_state[0]["manual_code"] == "bronze"
    assert third_state[0]["due_at"] == start + 3 * DAY


def test_the_upgrade_in_one_statement_is_what_an_accrual_with_a_new_tier_sends(
    session: Session, clock: FrozenClock
) -> None:
    """The member's first move and a later one: no statement locks the tier row on its own,
    none updates it through the ORM."""
    make_ladder(session)
    member_id = members_service.enroll_member(session, external_id="once-count")[0].id
    seen: list[str] = []

    def note(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    engine = session.get_bind().engine
    event.listen(engine, "before_cursor_execute", note)
    try:
        order(session, member_id, 60000, order_id="silver")
        order(session, member_id, 50000, order_id="gold")
    finally:
        event.remove(engine, "before_cursor_execute", note)
    tiers = [s for s in seen if "member_tiers" in s and not s.startswith("SELECT wallets")]
    assert len(tiers) == 2, "\n\n".join(tiers)
    assert all(s.startswith("WITH held_tier AS") for s in tiers), "\n\n".join(tiers)
    assert service.get_member_tier(session, member_id).tier.code == "gold"


@pytest.mark.concurrency
@pytest.mark.parametrize("has_row", [True, False], ids=["row", "no-row"])
def test_a_manual_tier_given_after_the_lock_read_the_row_is_kept_by_the_upgrade(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock, has_row: bool
) -> None:
    """The order's lock statement reads the member's tier row, then (stretched) a manager
    assigns a tier until a moment and commits: the tier row changed (or, for a member
    without one, appeared), the wallet did not. The upgrade must not write over the
    assignment: the member keeps it, its end stays the row's due moment, and the computed
    tier moves up."""
    session = new_session()
    make_ladder(session)
    member_id = members_service.enroll_member(session, external_id="gap")[0].id
    other = members_service.enroll_member(session, external_id="gap-other")[0].id
    order(session, other, 100, order_id="warm")  # the ladder in the process's cache
    order(session, member_id, 100, order_id="wallet")  # a wallet, still no tier row (bronze)
    if has_row:
        order(session, member_id, 60000, order_id="silver")
    session.close()
    until = clock.now() + 10 * DAY

    def assign() -> Any:
        return service.assign_tier(
            new_session(),
            member_id=member_id,
            tier="bronze",
            reason="trial",
            until=until,
            actor="manager",
        )

    def upgrade(s: Session) -> Any:
        return ledger.accrue_order(
            s,
            client_id=CLIENT,
            order_id="gold",
            member_id=member_id,
            total=150000,
            currency="USD",
        ).body

    assigned, upgraded = in_the_lock_gap(app, new_session, upgrade, assign)
    assert assigned.tier.code == "bronze"
    assert isinstance(upgraded, dict), upgraded
    check = new_session()
    row = check.get(MemberTier, member_id)
    assert row is not None
    assert (row.tier_code, row.manual_code) == ("gold", "bronze")
    assert row.manual_until == until
    assert row.due_at == until  # lifetime window: no review, the assignment's end is due
    kinds = [
        (c.kind, c.to_code)
        for c in check.scalars(
            select(TierChange).where(TierChange.member_id == member_id).order_by(TierChange.id)
        )
    ]
    upgrades = [("upgrade", "silver")] if has_row else []
    assert kinds == [*upgrades, ("manual", "bronze"), ("upgrade", "gold")], kinds
    assert service.get_member_tier(check, member_id).tier.code == "bronze"
