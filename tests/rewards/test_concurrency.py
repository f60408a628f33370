"""Claims and the due work on real PostgreSQL connections and threads: stock and per-member
limits hold, and each birthday gift is granted once with several job runners."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.ledger import service as ledger
from loyalty.rewards import service
from loyalty.rewards.errors import (
    ClaimLimitReachedError,
    ClaimNotIssuedError,
    RewardOutOfStockError,
)
from loyalty.rewards.models import Claim, PerkGrant
from tests.rewards.conftest import make_member, make_perk, make_reward, make_tiers
from tests.support import race

pytestmark = pytest.mark.concurrency
T = TypeVar("T")


def test_stock_of_three_gives_three_claims_to_ten_members(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    members = [make_member(session, points=100) for _ in range(10)]
    reward_id = make_reward(session, points_cost=100, stock=3).id
    results = race(
        app,
        10,
        lambda i, s: service.claim_reward(s, member_id=members[i], reward_id=reward_id).claim.id,
    )
    claimed = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, RewardOutOfStockError)]
    assert (len(claimed), len(refused)) == (3, 7), results
    check = new_session()
    assert service.get_reward(check, reward_id).stock == 0
    balances = sorted(ledger.get_balance(check, m).available for m in members)
    assert balances == [0] * 3 + [100] * 7
    assert check.scalar(select(func.count()).select_from(Claim)) == 3


def test_one_member_claiming_five_times_at_once_gets_its_limit_of_one(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    member_id = make_member(session, points=500)
    reward_id = make_reward(session, points_cost=100, per_member_limit=1).id
    results = race(
        app,
        5,
        lambda i, s: service.claim_reward(s, member_id=member_id, reward_id=reward_id).claim.id,
    )
    assert len([r for r in results if isinstance(r, str)]) == 1, results
    assert len([r for r in results if isinstance(r, ClaimLimitReachedError)]) == 4, results
    assert ledger.get_balance(new_session(), member_id).available == 400


def test_using_and_cancelling_a_claim_at_once_does_one_of_them(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    member_id = make_member(session, points=100)
    claim_id = service.claim_reward(
        session, member_id=member_id, reward_id=make_reward(session, stock=1).id
    ).claim.id

    def work(index: int, s: Session) -> str:
        if index % 2:
            return service.use_claim(s, claim_id=claim_id).status
        return service.cancel_claim(s, claim_id=claim_id).status

    results = race(app, 6, work)
    done = [r for r in results if isinstance(r, str)]
    assert len(done) == 1, results
    assert all(isinstance(r, ClaimNotIssuedError) for r in results if r not in done)
    check = new_session()
    expected = 100 if done == ["cancelled"] else 0
    assert ledger.get_balance(check, member_id).available == expected


def test_two_job_runners_grant_each_birthday_gift_once(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    make_tiers(session)
    gift = make_reward(session, kind="free_product", sku="cake")
    make_perk(
        session,
        kind="birthday_gift",
        bonus_points=50,
        reward_id=gift.id,
        tier_codes=["silver", "gold"],
    )
    members = [make_member(session, birthday=dt.date(1990, 3, 1 + i)) for i in range(25)]
    results = race(app, 3, lambda i, s: service.run_due(s, batch_size=4)["birthday gifts"])
    assert all(isinstance(r, int) for r in results), results
    assert sum(results) == 25  # type: ignore[arg-type]
    check = new_session()
    assert check.scalar(select(func.count()).select_from(PerkGrant)) == 25
    assert check.scalar(select(func.count()).select_from(Claim)) == 25
    assert {ledger.get_balance(check, m).lifetime_earned for m in members} == {50}
    assert service.run_due(check)["birthday gifts"] == 0
