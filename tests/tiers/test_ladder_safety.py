"""Ladder changes that must not take effect inside a request or race an upgrade: deleting a
tier an accrual is upgrading to, raising the base tier's threshold, deleting a tier the
programme names; and upgrades from orders that earn no points."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import get_database
from loyalty.earning import service as earning_service
from loyalty.ledger import service as ledger_service
from loyalty.members import service as members_service
from loyalty.rewards import service as rewards_service
from loyalty.tiers import service
from loyalty.tiers.errors import BaseTierHeldError, TierInUseError, TierReferencedError
from tests.support import START
from tests.tiers.conftest import make_ladder, policy

DAY = START - START.replace(day=START.day - 1)


def test_the_base_tier_threshold_cannot_be_raised_while_members_hold_it(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    make_ladder(session)
    mid = member()
    assert service.current_tiers(session, [mid])[mid].code == "bronze"
    with pytest.raises(BaseTierHeldError):
        service.update_tier(session, code="bronze", changes={"threshold": 1}, actor="m")
    assert service.current_tiers(session, [mid])[mid].code == "bronze"
    enrolled, _ = members_service.enroll_member(session, external_id="fresh")
    assert enrolled.tier == {"code": "bronze", "name": "Bronze"}  # also in the 201 body


def test_a_tier_the_programme_names_cannot_be_deleted(session: Session, clock: FrozenClock) -> None:
    make_ladder(session)
    campaign = earning_service.create_campaign(
        session,
        actor="m",
        name="Gold week",
        starts_at=START,
        ends_at=START + 7 * DAY,
        target="tiers",
        target_values=["gold"],
        bonus_points=10,
    )
    rewards_service.create_reward(
        session, actor="m", kind="custom", name="Lounge", points_cost=10, tier_codes=["silver"]
    )
    with pytest.raises(TierReferencedError) as refused:
        service.delete_tier(session, code="gold", actor="m")
    assert refused.value.data["referenced_by"] == ["campaigns"]
    with pytest.raises(TierReferencedError):
        service.delete_tier(session, code="silver", actor="m")
    # Pausing the campaign does not re-check its targets.
    earning_service.update_campaign(
        session, campaign_id=campaign.id, changes={"active": False}, actor="m"
    )


def test_orders_that_earn_nothing_still_upgrade_on_spend(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    make_ladder(session, (("bronze", "Bronze", 1, 0), ("silver", "Silver", 2, 100)))
    policy(session, metric="spend")
    earning_service.update_earning_settings(
        session, changes={"excluded_categories": ["gift-cards"]}, actor="m"
    )
    mid = member()
    result = ledger_service.accrue_order(
        session,
        client_id="cli_test",
        order_id="gift",
        member_id=mid,
        total=20000,
        currency="USD",
        items=[{"sku": "gc", "category": "gift-cards", "quantity": 1, "unit_price": 20000}],
    )
    assert result.body["points"] == 0
    assert service.current_tiers(session, [mid])[mid].code == "silver"


def test_a_bonus_can_upgrade_on_points(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    from loyalty.db import unit_of_work

    make_ladder(session, (("bronze", "Bronze", 1, 0), ("silver", "Silver", 2, 100)))
    mid = member()
    with unit_of_work(session):
        ledger_service.credit_bonus(session, member_id=mid, points=150, reason="gift")
    assert service.current_tiers(session, [mid])[mid].code == "silver"


@pytest.mark.concurrency
def test_deleting_a_tier_while_an_accrual_upgrades_to_it(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """The accrual holds the tier (key share) until it commits: a delete waits, then finds
    the new holder and refuses; an accrual after a delete in flight waits and then sees the
    tier gone and does not upgrade. Neither is a 500 or a lost order."""
    session = new_session()
    make_ladder(
        session,
        (("bronze", "Bronze", 1, 0), ("gold", "Gold", 2, 100), ("platinum", "Platinum", 3, 200)),
    )
    mid = members_service.enroll_member(session, external_id="racer")[0].id
    engine = get_database(app).engine

    # 1. An upgrade in flight (simulated: a connection holding the tier as an accrual does,
    #    then writing the member's gold row) makes a concurrent delete refuse.
    outcome: list[object] = []
    with engine.connect() as holder:
        holder.execute(text("SELECT code FROM tiers WHERE code = 'gold' FOR KEY SHARE"))

        def delete() -> None:
            s = new_session()
            try:
                service.delete_tier(s, code="gold", actor="m")
                outcome.append("deleted")
            except Exception as error:  # noqa: BLE001 - the test inspects what it got
                outcome.append(error)

        thread = threading.Thread(target=delete)
        thread.start()
        thread.join(0.3)  # the delete waits for the accrual (or, on a slow machine, comes later)
        holder.execute(
            text(
                "INSERT INTO member_tiers (member_id, tier_code, ladder_version, updated_at) "
                "VALUES (:m, 'gold', 0, now())"
            ),
            {"m": mid},
        )
        holder.commit()
        thread.join(10)
    assert isinstance(outcome[0], TierInUseError)

    # 2. A delete in flight makes a concurrent accrual skip the upgrade, not fail.
    other = members_service.enroll_member(session, external_id="racer-2")[0].id
    with engine.connect() as deleter:
        deleter.execute(text("DELETE FROM tiers WHERE code = 'platinum'"))
        results: list[object] = []

        def order() -> None:
            s = new_session()
            try:
                results.append(
                    ledger_service.accrue_order(
                        s,
                        client_id="cli_test",
                        order_id="big",
                        member_id=other,
                        total=50000,
                        currency="USD",
                    ).body
                )
            except Exception as error:  # noqa: BLE001 - the test inspects what it got
                results.append(error)

        thread = threading.Thread(target=order)
        thread.start()
        thread.join(0.3)
        deleter.commit()
        thread.join(10)
    assert results and results[0]["points"] == 500  # type: ignore[index]
    check = new_session()
    assert service.current_tiers(check, [other])[other].code == "gold"  # not platinum
