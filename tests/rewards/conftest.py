"""Rewards test helpers: a controllable clock, factories for members, tiers, perks and
rewards, and the ledger's invariants checked after every test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.ledger import service as ledger
from loyalty.members import service as members_service
from loyalty.rewards import service
from loyalty.rewards.models import Perk, Reward
from loyalty.tiers import service as tiers_service
from tests.support import START, _invariants_hold, clock

DAY = dt.timedelta(days=1)


_counter = iter(range(1, 10**9))


def make_member(session: Session, *, points: int = 0, tier: str | None = None, **kw: Any) -> str:
    """Enrol a member, credit ``points`` active points and assign ``tier`` by hand."""
    member, _ = members_service.enroll_member(session, external_id=f"cust-{next(_counter)}", **kw)
    if points:
        ledger.adjust(session, member_id=member.id, points=points, reason="test", actor="test")
    if tier is not None:
        tiers_service.assign_tier(
            session, member_id=member.id, tier=tier, reason="test", actor="test"
        )
    return member.id


@pytest.fixture
def member(session: Session, clock: FrozenClock) -> Callable[..., str]:
    def make(**kwargs: Any) -> str:
        return make_member(session, **kwargs)

    return make


def make_tiers(session: Session) -> None:
    """A ladder: silver (everyone, threshold 0) and gold (by hand)."""
    tiers_service.create_tier(session, code="silver", name="Silver", rank=1, threshold=0, actor="t")
    tiers_service.create_tier(session, code="gold", name="Gold", rank=2, threshold=10**9, actor="t")


@pytest.fixture
def tiers(session: Session, clock: FrozenClock) -> None:
    make_tiers(session)


def make_reward(session: Session, **values: Any) -> Reward:
    values = {"kind": "custom", "name": "Tote bag", "points_cost": 100, **values}
    return service.create_reward(session, actor="test", **values)


def make_perk(session: Session, **values: Any) -> Perk:
    values = {"kind": "free_shipping", "name": "Free shipping", "tier_codes": ["gold"], **values}
    return service.create_perk(session, actor="test", **values)


@pytest.fixture
def reward(session: Session, clock: FrozenClock) -> Callable[..., Reward]:
    def make(**values: Any) -> Reward:
        return make_reward(session, **values)

    return make
