"""Tier test helpers: a controllable clock, a member factory, a standard ladder, and the
ledger's invariants checked after every test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from loyalty.members import service as members_service
from loyalty.tiers import service
from tests.support import START, _invariants_hold, clock

DAY = dt.timedelta(days=1)
# (code, name, rank, threshold)
STANDARD_LADDER = (
    ("bronze", "Bronze", 1, 0),
    ("silver", "Silver", 2, 500),
    ("gold", "Gold", 3, 1000),
)


@pytest.fixture
def member(session: Session) -> Callable[..., str]:
    counter = iter(range(1, 1_000_000))

    def make(**kwargs: Any) -> str:
        created, _ = members_service.enroll_member(
            session, external_id=f"tier-cust-{next(counter)}", **kwargs
        )
        return created.id

    return make


def make_ladder(
    session: Session, rungs: tuple[tuple[str, str, int, int], ...] = STANDARD_LADDER
) -> None:
    for code, name, rank, threshold in rungs:
        service.create_tier(
            session,
            code=code,
            name=name,
            rank=rank,
            threshold=threshold,
            points_multiplier="1",
            actor="test",
        )


def policy(session: Session, **changes: Any) -> None:
    service.update_policy(session, changes=changes, actor="test")
