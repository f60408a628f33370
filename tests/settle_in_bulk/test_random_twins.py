"""Review 8: random histories, the same for twins; one twin of each pair settled alone, the
other by the job's batch (in one statement), several pairs a batch. SETTLE_SEEDS sets how many
histories (24)."""

# The twins' calls below are made at once, in the iteration that defines them.
# ruff: noqa: B023

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.ledger import service
from tests.ledger.conftest import order, settings
from tests.ledger.test_reconciliation import refund, spend
from tests.settle_in_bulk.helpers import (
    DAY,
    assert_same,
    in_one_statement,
    last_seq,
    statements,
    wallet_of,
)

PAIRS = 3


def _same_outcome(calls: list[Callable[[], object]]) -> None:
    outcomes = []
    for call in calls:
        try:
            call()
            outcomes.append(None)
        except Exception as error:  # noqa: BLE001
            outcomes.append(type(error).__name__)
    assert len(set(outcomes)) == 1, outcomes


@pytest.mark.parametrize("seed", range(int(os.environ.get("SETTLE_SEEDS", "24"))))
def test_random_histories(
    session: Session, member: Callable[..., str], clock: FrozenClock, seed: int
) -> None:
    rnd = random.Random(seed)
    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=14)
    pairs = [(member(), member()) for _ in range(PAIRS)]
    orders: dict[int, list[str]] = {p: [] for p in range(PAIRS)}
    counter = 0
    for _step in range(rnd.randint(8, 25)):
        p = rnd.randrange(PAIRS)
        twins = pairs[p]
        op = rnd.random()
        counter += 1
        if op < 0.35:
            total = rnd.choice([0, 50, 999, 1000, 5000, 12345, 20000])
            back = rnd.choice([0, 0, 1, 5, 15, 30]) * DAY
            suffix = f"o{counter}"
            _same_outcome(
                [
                    (
                        lambda t=t: order(
                            session,
                            t,
                            total,
                            order_id=f"{t}-{suffix}",
                            placed_at=clock.now() - back,
                        )
                    )
                    for t in twins
                ]
            )
            orders[p].append(suffix)
        elif op < 0.45 and orders[p]:
            suffix = rnd.choice(orders[p])
            amount = rnd.choice([100, 1000, 3000, None])
            _same_outcome(
                [
                    (
                        lambda t=t: refund(
                            session,
                            f"{t}-{suffix}",
                            f"{t}-r{counter}",
                            **({"amount": amount} if amount else {}),
                        )
                    )
                    for t in twins
                ]
            )
        elif op < 0.55:
            points = rnd.choice([1, 10, 35, 120])
            _same_outcome([(lambda t=t: spend(session, t, points)) for t in twins])
        elif op < 0.62:
            points = rnd.choice([1, 10, 35])
            _same_outcome(
                [
                    (
                        lambda t=t: service.place_hold(
                            session, member_id=t, points=points, expires_in=800 * 24 * 3600
                        )
                    )
                    for t in twins
                ]
            )
        elif op < 0.70:
            points = rnd.choice([1, 7, 50])
            _same_outcome(
                [
                    (
                        lambda t=t: service.credit_bonus(
                            session, member_id=t, points=points, reason="r", actor="a"
                        )
                    )
                    for t in twins
                ]
            )
        elif op < 0.78:
            policy = rnd.choice(["rolling", "calendar", "none"])
            changes = {
                "expiry_policy": policy,
                "expiry_months": rnd.choice([1, 2]),
                "pending_days": rnd.choice([0, 3, 14, 30]),
            }
            if policy == "calendar":
                changes["expiry_period"] = rnd.choice(["month", "quarter", "year"])
            settings(session, **changes)
        else:
            clock.advance(rnd.choice([0, 1, 7, 20, 40]) * DAY)
    clock.advance(rnd.choice([30, 70, 400]) * DAY)
    since = last_seq(session)
    alone = [a for a, _ in pairs]
    for member_id in alone:
        service.settle_wallet(session, wallet_id=wallet_of(session, member_id).id, actor="jobs")
    with statements(session) as sent:
        while service.settle_due_batch(session, batch_size=50):
            pass
    statements_run = sum("outbox_told" in s for s in sent)
    assert statements_run <= 1
    print("bulk statements:", statements_run)
    for one, other in pairs:
        assert_same(session, one, other, since)
    _ = in_one_statement
