"""Analytics test helpers: a frozen clock at `NOW`, and the small fixed dataset whose figures
the tests compute by hand (README, "Analytics", has the definitions they follow)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock, use_clock
from loyalty.community import service as community
from loyalty.ledger import service as ledger
from loyalty.members import service as members
from tests.support import _invariants_hold

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def at(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


@pytest.fixture
def now(app: Flask) -> Iterator[FrozenClock]:
    """The app's clock, frozen at `NOW`."""
    frozen = FrozenClock(NOW)
    use_clock(app, frozen)
    yield frozen
    use_clock(app, None)


def enrol(session: Session, external_id: str, enrolled_at: dt.datetime, **kwargs: object) -> str:
    member, _ = members.enroll_member(
        session,
        external_id=external_id,
        enrolled_at=enrolled_at,
        **kwargs,  # type: ignore[arg-type]
    )
    return member.id


def order(
    session: Session,
    member_id: str,
    order_id: str,
    total: int,
    placed_at: dt.datetime,
    currency: str = "USD",
) -> None:
    ledger.accrue_order(
        session,
        order_id=order_id,
        member_id=member_id,
        total=total,
        currency=currency,
        placed_at=placed_at,
        backfill=True,
    )


def event(
    session: Session,
    member_id: str,
    event_id: str,
    type_: str,
    when: dt.datetime,
    **properties: object,
) -> None:
    community.record_event(
        session,
        event_id=event_id,
        member_id=member_id,
        type=type_,
        occurred_at=when,
        properties=dict(properties),
        backfill=True,
    )


@dataclass(frozen=True)
class Dataset:
    a: str  # UTC, joined 2026-01-10: orders on days 1, 5, 26 and 111
    b: str  # UTC, referred by A, joined 2026-01-20: an order refunded in full, an event on day 40
    c: str  # Tokyo, joined 2026-01-31 23:30 UTC = 1 February local: orders on days 0 and 2
    d: str  # UTC, joined on the leap day 2024-02-29: an order on day 365 (2025-02-28)
    e: str  # UTC, joined 2026-06-01: an order on day 3


def build(session: Session) -> Dataset:
    """The fixed dataset (the clock must be at `NOW`)."""
    a = enrol(session, "cust-a", at(2026, 1, 10, 10))
    referral_code = members.get_member(session, a).referral_code
    b = enrol(session, "cust-b", at(2026, 1, 20), referral_code=referral_code)
    c = enrol(session, "cust-c", at(2026, 1, 31, 23, 30), timezone="Asia/Tokyo")
    d = enrol(session, "cust-d", at(2024, 2, 29))
    e = enrol(session, "cust-e", at(2026, 6, 1))
    order(session, a, "A-1", 1000, at(2026, 1, 11))
    order(session, a, "A-2", 2000, at(2026, 1, 15))
    order(session, a, "A-3", 3000, at(2026, 2, 5))
    order(session, a, "A-4", 4000, at(2026, 5, 1))
    order(session, b, "B-1", 1500, at(2026, 1, 21))
    ledger.refund_order(session, order_id="B-1", refund_id="B-1-R", amount=1500)
    event(session, b, "b-check", "check_in", at(2026, 3, 1))
    order(session, c, "C-1", 5000, at(2026, 2, 1, 1))  # 10:00 on 1 February in Tokyo: day 0
    order(session, c, "C-2", 7000, at(2026, 2, 2, 16))  # 01:00 on 3 February in Tokyo: day 2
    ledger.refund_order(session, order_id="C-2", refund_id="C-2-R", amount=1000)
    order(session, d, "D-1", 1000, at(2025, 2, 28))
    order(session, e, "E-1", 2000, at(2026, 6, 4))
    return Dataset(a=a, b=b, c=c, d=d, e=e)
