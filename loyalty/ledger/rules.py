"""Pure rules of the points core: earning arithmetic, expiry dates, which lots a debit takes,
and how much of an order a refund reverses. No database, no Flask."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

import iso4217
from dateutil.relativedelta import relativedelta

ROUNDING_MODES = {"floor": ROUND_FLOOR, "half_up": ROUND_HALF_UP, "ceiling": ROUND_CEILING}
EXPIRY_POLICIES = ("none", "rolling", "calendar", "inactivity")
CALENDAR_PERIODS = ("month", "quarter", "year")
REFUND_POLICIES = ("within_balance", "allow_negative")
HOLD_STATUSES = ("held", "captured", "released", "expired")


# --- money and earning ---------------------------------------------------------------------


def currency_exponent(code: str) -> int | None:
    """Minor-unit exponent of an ISO 4217 currency (USD 2, JPY 0, BHD 3), or None when the
    code is unknown or has no minor unit (gold, test codes)."""
    try:
        exponent = iso4217.Currency(code.upper()).exponent
    except (ValueError, KeyError):
        return None
    return exponent


def points_for_amount(amount_minor: int, exponent: int, rate: Decimal, rounding: str) -> int:
    """Points earned on ``amount_minor`` minor units at ``rate`` points per major unit.

    >>> points_for_amount(12345, 2, Decimal(1), "floor")
    123
    """
    exact = Decimal(amount_minor) * rate / (Decimal(10) ** exponent)
    return int(exact.quantize(Decimal(1), rounding=ROUNDING_MODES[rounding]))


def split_points(total: int, weights: Sequence[int]) -> list[int]:
    """Share ``total`` points out in proportion to ``weights`` (largest remainder): the shares
    always add up to ``total``."""
    weight_sum = sum(weights)
    if weight_sum <= 0:
        shares = [0] * len(weights)
        if shares:
            shares[0] = total
        return shares
    exact = [Fraction(total * w, weight_sum) for w in weights]
    shares = [int(x) for x in exact]
    left = total - sum(shares)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[:left]:
        shares[i] += 1
    return shares


# --- dates ---------------------------------------------------------------------------------


def _next_midnight(moment: dt.datetime) -> dt.datetime:
    day = moment.astimezone(dt.UTC).date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def expiry_for(
    earned_at: dt.datetime, policy: str, months: int, period: str = "year"
) -> dt.datetime | None:
    """When points earned at ``earned_at`` expire (an exclusive instant, midnight UTC).

    - ``none`` and ``inactivity``: no date on the points (inactivity is decided later);
    - ``rolling``: at the end of the day ``months`` months after earning;
    - ``calendar``: at the end of the ``months``-th calendar ``period`` counting the one the
      points were earned in as the first (``year``, 1: 31 December of the same year).
    """
    if policy in ("none", "inactivity"):
        return None
    if policy == "rolling":
        return _next_midnight(earned_at + relativedelta(months=months))
    if policy == "calendar":
        moment = earned_at.astimezone(dt.UTC)
        if period == "month":
            start = dt.datetime(moment.year, moment.month, 1, tzinfo=dt.UTC)
            return start + relativedelta(months=months)
        if period == "quarter":
            start = dt.datetime(moment.year, 3 * ((moment.month - 1) // 3) + 1, 1, tzinfo=dt.UTC)
            return start + relativedelta(months=3 * months)
        return dt.datetime(moment.year + months, 1, 1, tzinfo=dt.UTC)
    raise ValueError(f"unknown expiry policy {policy!r}")


def inactivity_deadline(last_activity_at: dt.datetime, months: int) -> dt.datetime:
    """With the inactivity policy, all points expire at this instant unless the member acts."""
    return _next_midnight(last_activity_at + relativedelta(months=months))


# --- lots ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LotView:
    """What the consumption rule needs to know of a lot."""

    id: int
    remaining: int
    expires_at: dt.datetime | None


def consumption_order(lots: Iterable[LotView]) -> list[LotView]:
    """Soonest-expiring first, lots without expiry last, then oldest first."""
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(lots, key=lambda lot: (lot.expires_at or far, lot.id))


def plan_consumption(lots: Iterable[LotView], points: int) -> list[tuple[int, int]]:
    """Which lots a debit of ``points`` takes, as ``(lot_id, points)`` in consumption order.

    Takes at most what the lots hold; the caller checks the total first.
    """
    plan: list[tuple[int, int]] = []
    left = points
    for lot in consumption_order(lots):
        if left <= 0:
            break
        take = min(lot.remaining, left)
        if take > 0:
            plan.append((lot.id, take))
            left -= take
    return plan


def plan_restoration(taken: Sequence[tuple[int, int]], points: int) -> list[tuple[int, int]]:
    """Give ``points`` back to the lots a debit took (``taken`` in consumption order), last
    taken first, so the points that would expire soonest are the ones kept spent."""
    plan: list[tuple[int, int]] = []
    left = points
    for lot_id, took in reversed(taken):
        if left <= 0:
            break
        back = min(took, left)
        plan.append((lot_id, back))
        left -= back
    return plan


# --- refunds -------------------------------------------------------------------------------


def cumulative_share(points: int, part: int, whole: int) -> int:
    """Points that correspond to ``part`` of ``whole`` (rounded half up); computing refunds
    cumulatively with this makes a full refund reverse exactly the points earned."""
    if whole <= 0:
        return points
    return int((Fraction(points * part, whole) + Fraction(1, 2)) // 1)


# --- idempotency ---------------------------------------------------------------------------


def request_fingerprint(method: str, path: str, body: Any) -> str:
    """A hash identifying a request: method, path and the JSON body in canonical form."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()
