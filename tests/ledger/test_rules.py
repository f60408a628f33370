"""The points core's pure rules: no database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loyalty.ledger import rules

UTC = dt.UTC


@pytest.mark.parametrize(
    ("amount", "currency", "rate", "rounding", "points"),
    [
        (10000, "USD", "1", "floor", 100),
        (12399, "USD", "1", "floor", 123),
        (12399, "USD", "1", "half_up", 124),
        (12350, "USD", "1", "half_up", 124),
        (12349, "USD", "1", "half_up", 123),
        (12301, "USD", "1", "ceiling", 124),
        (100, "JPY", "1", "floor", 100),
        (1999, "BHD", "1", "floor", 1),
        (10000, "USD", "2.5", "floor", 250),
        (999, "USD", "0.5", "floor", 4),
        (0, "USD", "1", "ceiling", 0),
    ],
)
def test_points_for_amount(
    amount: int, currency: str, rate: str, rounding: str, points: int
) -> None:
    exponent = rules.currency_exponent(currency)
    assert exponent is not None
    assert rules.points_for_amount(amount, exponent, Decimal(rate), rounding) == points


def test_currency_exponents_come_from_iso_4217() -> None:
    assert rules.currency_exponent("usd") == 2
    assert rules.currency_exponent("JPY") == 0
    assert rules.currency_exponent("KWD") == 3
    assert rules.currency_exponent("XAU") is None  # gold has no minor unit
    assert rules.currency_exponent("ABC") is None


@given(st.integers(0, 10**9), st.lists(st.integers(0, 10**6), max_size=20))
def test_split_points_always_adds_up(total: int, weights: list[int]) -> None:
    shares = rules.split_points(total, weights)
    assert len(shares) == len(weights)
    if weights:
        assert sum(shares) == total
        assert all(share >= 0 for share in shares)


def test_split_points_is_proportional_with_largest_remainders() -> None:
    assert rules.split_points(123, [10000, 2345]) == [100, 23]
    assert rules.split_points(10, [1, 1, 1]) == [4, 3, 3]


@pytest.mark.parametrize(
    ("earned", "policy", "months", "period", "expires"),
    [
        (dt.datetime(2026, 3, 10, 12, tzinfo=UTC), "none", 36, "year", None),
        (dt.datetime(2026, 3, 10, 12, tzinfo=UTC), "inactivity", 12, "year", None),
        (
            dt.datetime(2026, 3, 10, 12, tzinfo=UTC),
            "rolling",
            36,
            "year",
            dt.datetime(2029, 3, 11, tzinfo=UTC),
        ),
        (
            dt.datetime(2026, 1, 31, 23, tzinfo=UTC),
            "rolling",
            1,
            "year",
            dt.datetime(2026, 3, 1, tzinfo=UTC),  # 28 Feb is the last day
        ),
        (
            dt.datetime(2026, 3, 10, 12, tzinfo=UTC),
            "calendar",
            1,
            "year",
            dt.datetime(2027, 1, 1, tzinfo=UTC),
        ),
        (
            dt.datetime(2026, 3, 10, 12, tzinfo=UTC),
            "calendar",
            2,
            "year",
            dt.datetime(2028, 1, 1, tzinfo=UTC),
        ),
        (
            dt.datetime(2026, 3, 10, 12, tzinfo=UTC),
            "calendar",
            1,
            "quarter",
            dt.datetime(2026, 4, 1, tzinfo=UTC),
        ),
        (
            dt.datetime(2026, 11, 30, 12, tzinfo=UTC),
            "calendar",
            2,
            "quarter",
            dt.datetime(2027, 4, 1, tzinfo=UTC),
        ),
        (
            dt.datetime(2026, 12, 5, tzinfo=UTC),
            "calendar",
            3,
            "month",
            dt.datetime(2027, 3, 1, tzinfo=UTC),
        ),
    ],
)
def test_expiry_dates(
    earned: dt.datetime, policy: str, months: int, period: str, expires: dt.datetime | None
) -> None:
    assert rules.expiry_for(earned, policy, months, period) == expires


def test_inactivity_deadline() -> None:
    last = dt.datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert rules.inactivity_deadline(last, 12) == dt.datetime(2027, 3, 11, tzinfo=UTC)


def lot(lot_id: int, remaining: int, expires: dt.datetime | None) -> rules.LotView:
    return rules.LotView(lot_id, remaining, expires)


def test_consumption_takes_soonest_expiring_first_and_no_expiry_last() -> None:
    lots = [
        lot(1, 10, None),
        lot(2, 10, dt.datetime(2027, 1, 1, tzinfo=UTC)),
        lot(3, 10, dt.datetime(2026, 6, 1, tzinfo=UTC)),
        lot(4, 10, dt.datetime(2026, 6, 1, tzinfo=UTC)),
    ]
    assert rules.plan_consumption(lots, 25) == [(3, 10), (4, 10), (2, 5)]
    assert rules.plan_consumption(lots, 40) == [(3, 10), (4, 10), (2, 10), (1, 10)]
    assert rules.plan_consumption(lots, 100) == [(3, 10), (4, 10), (2, 10), (1, 10)]


def test_restoration_gives_back_the_last_taken_first() -> None:
    taken = [(3, 10), (4, 10), (2, 5)]
    assert rules.plan_restoration(taken, 7) == [(2, 5), (4, 2)]
    assert rules.plan_restoration(taken, 25) == [(2, 5), (4, 10), (3, 10)]


@given(st.integers(0, 10**6), st.integers(1, 10**7), st.lists(st.integers(1, 10**6), max_size=10))
def test_cumulative_refunds_reverse_exactly_the_points(
    points: int, total: int, parts: list[int]
) -> None:
    refunded = 0
    reversed_points = 0
    for part in parts:
        part = min(part, total - refunded)
        if part <= 0:
            break
        share = rules.cumulative_share(points, refunded + part, total) - rules.cumulative_share(
            points, refunded, total
        )
        assert share >= 0
        refunded += part
        reversed_points += share
    assert reversed_points <= points
    if refunded == total:
        assert reversed_points == points


def test_fingerprints_ignore_key_order_but_not_values() -> None:
    a = rules.request_fingerprint("POST", "/v1/orders", {"a": 1, "b": 2})
    assert a == rules.request_fingerprint("POST", "/v1/orders", {"b": 2, "a": 1})
    assert a != rules.request_fingerprint("POST", "/v1/orders", {"a": 1, "b": 3})
    assert a != rules.request_fingerprint("POST", "/v1/other", {"a": 1, "b": 2})
