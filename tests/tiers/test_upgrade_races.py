"""Upgrades into one tier racing each other and a manager's
change or deletion of the tier (the tier held FOR KEY SHARE in the statement that locks the
member's tier row)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.ledger import service as ledger
from loyalty.members import service as members_service
from loyalty.tiers import service
from tests.support import behind_a_lock, held_at_commit, in_thread, race, wait_for, waiting_for_lock
from tests.tiers.conftest import make_ladder
from tests.tiers.test_tier_delete_race import HOLDING_THE_TIER

pytestmark = pytest.mark.concurrency


def enrolled(session: Session, prefix: str, count: int, *, warm: int) -> list[str]:
    """``count`` new members; the first ``warm`` of them with an order of 1 USD (a tier row,
    and the ladder in the process's cache)."""
    members = [
        members_service.enroll_member(session, external_id=f"{prefix}-{i}")[0].id
        for i in range(count)
    ]
    for member_id in members[:warm]:
        ledger.accrue_order(
            session,
            client_id="cli_test",
            order_id=f"{member_id}-warm",
            member_id=member_id,
            total=100,
            currency="USD",
        )
    return members


@pytest.mark.parametrize(
    "manager",
    ["delete-gold", "rename-gold", "rerank-silver", "job", "policy", "delete-silver", "rank-gold"],
)
def test_upgrades_into_one_tier_race_a_managers_change_without_errors(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock, manager: str
) -> None:
    session = new_session()
    make_ladder(session)  # bronze 0, silver 500, gold 1000 points
    # The ladder in the process's cache, each member with a tier row (bronze).
    members = enrolled(session, "rc", 8, warm=8)
    session.close()

    def work(index: int, s: Session) -> Any:
        if index == 8:
            if manager == "delete-gold":
                return service.delete_tier(s, code="gold", actor="manager")
            if manager == "rename-gold":
                return service.update_tier(s, code="gold", changes={"name": "Au"}, actor="m")
            if manager == "rerank-silver":
                return service.update_tier(s, code="silver", changes={"threshold": 400}, actor="m")
            if manager == "rank-gold":  # a key update (rank is unique): FOR UPDATE
                return service.update_tier(s, code="gold", changes={"rank": 7}, actor="m")
            if manager == "job":
                return service.run_due(s)
            if manager == "delete-silver":
                return service.delete_tier(s, code="silver", actor="manager")
            return service.update_policy(s, changes={"grace_days": 3}, actor="m")
        return ledger.accrue_order(
            s,
            client_id="cli_test",
            order_id=f"{members[index]}-big",
            member_id=members[index],
            total=150000,  # gold
            currency="USD",
        )

    outcomes = race(app, 9, work)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    if manager.startswith("delete"):
        errors = [e for e in errors if type(e).__name__ != "TierInUseError"]
    assert not errors, outcomes
    check = new_session()
    codes = {m: service.get_member_tier(check, m).tier for m in members}
    assert all(tier is not None and tier.code in ("silver", "gold") for tier in codes.values())


@pytest.mark.parametrize("ladder", ["three", "two"])
def test_a_new_members_order_racing_the_deletion_of_its_tier(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock, ladder: str
) -> None:
    """The member has no tier row yet (the upsert's insert branch holds the tier): the
    deletion commits while the order waits for the tier; the order then moves the member by
    what is left of the ladder (silver; the base tier, with no row naming it, without one)."""
    session = new_session()
    if ladder == "three":
        make_ladder(session)  # bronze 0, silver 500, gold 1000 points
    else:
        make_ladder(session, (("bronze", "Bronze", 1, 0), ("gold", "Gold", 3, 1000)))
    warm = members_service.enroll_member(session, external_id="warm")[0].id
    fresh = members_service.enroll_member(session, external_id="fresh")[0].id
    ledger.accrue_order(
        session,
        client_id="cli_test",
        order_id="warm",
        member_id=warm,
        total=100,
        currency="USD",
    )
    session.close()
    deleted, raced = behind_a_lock(
        app,
        new_session,
        lambda s: service.delete_tier(s, code="gold", actor="test"),
        lambda s: ledger.accrue_order(
            s,
            client_id="cli_test",
            order_id="fresh",
            member_id=fresh,
            total=160000,
            currency="USD",
        ),
        statement_like=HOLDING_THE_TIER,
    )
    assert deleted is None
    assert isinstance(raced, ledger.Replayable), raced
    check = new_session()
    view = service.get_member_tier(check, fresh)
    expected = "silver" if ladder == "three" else "bronze"
    assert view.tier is not None and view.tier.code == expected, view
    # The job finds nothing to change for the member afterwards.
    service.run_due(check)
    again = service.get_member_tier(new_session(), fresh)
    assert again.tier is not None and again.tier.code == expected


@pytest.mark.parametrize("member_row", ["existing", "new"])
def test_a_deletion_behind_an_upgrade_into_the_tier_is_refused(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock, member_row: str
) -> None:
    """The order holds gold (key share) to its commit; the deletion waits for it, then
    counts the member the order moved into gold and is refused."""
    session = new_session()
    make_ladder(session)
    climber = members_service.enroll_member(session, external_id="climber")[0].id
    other = members_service.enroll_member(session, external_id="other")[0].id
    warm = climber if member_row == "existing" else other
    ledger.accrue_order(
        session, client_id="cli_test", order_id="warm", member_id=warm, total=100, currency="USD"
    )
    session.close()
    holder, held, release = held_at_commit(
        app,
        new_session(),
        lambda s: ledger.accrue_order(
            s,
            client_id="cli_test",
            order_id="big",
            member_id=climber,
            total=160000,
            currency="USD",
        ),
    )
    deleting, deleted = in_thread(
        app, lambda: service.delete_tier(new_session(), code="gold", actor="manager")
    )
    watcher = new_session()
    try:
        wait_for(
            lambda: waiting_for_lock(watcher, "%FROM tiers%FOR UPDATE%"),
            "the deletion to wait for the tier",
        )
    finally:
        watcher.close()
        release.set()
    holder.join()
    deleting.join()
    assert isinstance(held[0], ledger.Replayable), held
    assert type(deleted[0]).__name__ == "TierInUseError", deleted
    view = service.get_member_tier(new_session(), climber)
    assert view.tier is not None and view.tier.code == "gold"


def test_upgrades_assignments_a_deletion_a_re_rank_and_the_job_together(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """Members' orders into gold, a manager assigning some of them silver by hand, another
    deleting gold, another re-ranking gold (a key update) and the tier job, all at once:
    no deadlock, no lock timeout (the deletion may be refused: gold is held)."""
    session = new_session()
    make_ladder(session)
    members = enrolled(session, "mix", 6, warm=3)
    session.close()

    def work(index: int, s: Session) -> Any:
        if index < 6:
            return ledger.accrue_order(
                s,
                client_id="cli_test",
                order_id=f"{members[index]}-big",
                member_id=members[index],
                total=150000,
                currency="USD",
            )
        if index < 9:
            return service.assign_tier(
                s,
                member_id=members[index - 6 + (index % 2) * 3],
                tier="silver",
                reason="hand",
                actor="m",
            )
        if index == 9:
            return service.delete_tier(s, code="gold", actor="m")
        if index == 10:
            return service.update_tier(s, code="gold", changes={"rank": 7}, actor="m")
        return service.run_due(s)

    outcomes = race(app, 12, work)
    errors = [
        o
        for o in outcomes
        if isinstance(o, Exception)
        # The deletion refused (gold held) or done before the re-rank.
        and type(o).__name__ not in ("TierInUseError", "TierNotFoundError")
    ]
    assert not errors, outcomes
