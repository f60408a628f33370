"""Pure rules of the points core: earning arithmetic, expiry dates, which lots a debit takes,
and how much of an order a refund reverses. No database, no Flask."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal
from fractions import Fraction

import iso4217
from dateutil.relativedelta import relativedelta

from loyalty.fingerprint import request_fingerprint  # noqa: F401  (natural keys use it)

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


# Spend is added up exactly, however large (the default context keeps 28 digits).
EXACT = Context(prec=80)


def major_units(money: int, currency: str) -> Decimal:
    """``money`` minor units of ``currency`` in major units, exactly (a code without a minor
    unit counts as 0 decimals)."""
    return EXACT.scaleb(Decimal(money), -(currency_exponent(currency) or 0))


def orders_kept(
    rows: Iterable[tuple[str, str, int, int]],
) -> dict[str, tuple[Decimal, int]]:
    """A wallet's spend and order count (invariant 8) from its orders by currency: rows of
    (wallet id, currency, money less refunds, orders not wholly refunded)."""
    kept: dict[str, tuple[Decimal, int]] = {}
    for wallet_id, currency, money, count in rows:
        spend, orders = kept.get(wallet_id, (Decimal(0), 0))
        kept[wallet_id] = (
            EXACT.add(spend, major_units(int(money), currency)),
            orders + int(count),
        )
    return kept


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


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone ``name``; raises `ValueError` for an unknown name."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _local_midnight(day: dt.date, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.UTC)


def _end_of_local_day(moment: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    return _local_midnight(moment.astimezone(tz).date() + dt.timedelta(days=1), tz)


def expiry_for(
    activated_at: dt.datetime,
    policy: str,
    months: int,
    period: str = "year",
    timezone: str = "UTC",
) -> dt.datetime | None:
    """When points that become spendable at ``activated_at`` expire (an exclusive instant,
    a midnight in the programme's ``timezone``). Validity counts from activation, so points
    always have a spendable window, however long the return window.

    - ``none`` and ``inactivity``: no date on the points (inactivity is decided later);
    - ``rolling``: at the end of the day ``months`` months after activation;
    - ``calendar``: at the end of the ``months``-th calendar ``period`` counting the one the
      points activated in as the first (``year``, 1: the end of 31 December of that year).
    """
    if policy in ("none", "inactivity"):
        return None
    tz = zone(timezone)
    if policy == "rolling":
        return _end_of_local_day(activated_at.astimezone(tz) + relativedelta(months=months), tz)
    if policy == "calendar":
        local = activated_at.astimezone(tz)
        if period == "month":
            start = dt.date(local.year, local.month, 1)
            return _local_midnight(start + relativedelta(months=months), tz)
        if period == "quarter":
            start = dt.date(local.year, 3 * ((local.month - 1) // 3) + 1, 1)
            return _local_midnight(start + relativedelta(months=3 * months), tz)
        return _local_midnight(dt.date(local.year + months, 1, 1), tz)
    raise ValueError(f"unknown expiry policy {policy!r}")


def inactivity_deadline(
    last_activity_at: dt.datetime, months: int, timezone: str = "UTC"
) -> dt.datetime:
    """With the inactivity policy, all points expire at this instant unless the member acts:
    the end of the programme's day ``months`` months after the last activity."""
    tz = zone(timezone)
    return _end_of_local_day(last_activity_at.astimezone(tz) + relativedelta(months=months), tz)


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


def line_amounts(total: int, values: Sequence[int]) -> list[int]:
    """Each item's share of the order's ``total`` money, in proportion to its value (quantity x
    unit price), so that the shares add up to the total: an order-level discount (or a
    surcharge) is spread over the items. Without priced items the first carries it all."""
    return split_points(total, list(values))


@dataclass
class RefundLine:
    """What a refund needs to know of one item of an order (an order without items is one
    line for its whole total)."""

    sku: str | None
    quantity: int
    refunded_quantity: int
    amount: int  # the line's share of the order's total money
    refunded_amount: int
    points: int  # the line's share of the order's points

    def reversed_points(self) -> int:
        """Points of the line reversed once ``refunded_amount`` of it is refunded (by
        quantity when the line carries no money)."""
        if self.amount > 0:
            return cumulative_share(self.points, self.refunded_amount, self.amount)
        if self.quantity > 0:
            return cumulative_share(self.points, self.refunded_quantity, self.quantity)
        return self.points


@dataclass(frozen=True)
class RefundShare:
    money: int
    points: int


class RefundTooLargeError(ValueError):
    """A refund asks for more than is left: ``left`` is the money (or, with ``sku``, the
    quantity) still refundable."""

    def __init__(self, left: int, sku: str | None = None, index: int | None = None) -> None:
        super().__init__(f"only {left} left to refund")
        self.left = left
        self.sku = sku
        self.index = index


def refund_share(
    lines: list[RefundLine],
    *,
    points_reversed: int,
    order_points: int,
    amount: int | None = None,
    items: Sequence[tuple[str, int]] = (),
) -> RefundShare:
    """Apply a refund to the order's ``lines`` (changed in place) and say how much money it
    returns and how many points it reverses.

    By items: each ``(sku, quantity)`` refunds that many units of the line, its money being
    the units' share of the line's money (never more than the line has left). By amount: the
    money is shared over the lines in proportion to what each has left. Points follow the
    money line by line, cumulatively, so refunds by item and by amount mixed on one order
    reverse every point once the order is wholly refunded. Raises `RefundTooLargeError`.
    """
    money = 0
    by_sku = {line.sku: line for line in lines}
    if items:
        for index, (sku, quantity) in enumerate(items):
            line = by_sku[sku]
            left = line.quantity - line.refunded_quantity
            if quantity > left:
                raise RefundTooLargeError(left, sku=sku, index=index)
            before = cumulative_share(line.amount, line.refunded_quantity, line.quantity)
            line.refunded_quantity += quantity
            after = cumulative_share(line.amount, line.refunded_quantity, line.quantity)
            take = min(after - before, line.amount - line.refunded_amount)
            line.refunded_amount += take
            money += take
    else:
        assert amount is not None
        left = sum(line.amount - line.refunded_amount for line in lines)
        if amount > left:
            raise RefundTooLargeError(left)
        shares = split_points(amount, [line.amount - line.refunded_amount for line in lines])
        for line, share in zip(lines, shares, strict=True):
            line.refunded_amount += share
        money = amount
    whole = all(line.refunded_amount >= line.amount for line in lines)
    reversed_now = order_points if whole else sum(line.reversed_points() for line in lines)
    points = max(0, min(reversed_now, order_points) - points_reversed)
    return RefundShare(money=money, points=points)
