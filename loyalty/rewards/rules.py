"""Pure rules of perks and rewards: whether a member may claim a reward (and why not), coupon
codes, when a birthday gift is due in the member's time zone, and the values a perk or reward
of each kind must carry. No database, no Flask."""

from __future__ import annotations

import datetime as dt
import secrets
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from loyalty.ledger.rules import currency_exponent

PERK_KINDS = ("free_shipping", "birthday_gift", "early_access", "exclusive_discount", "custom")
REWARD_KINDS = ("fixed_discount", "percentage_discount", "free_product", "custom")
CLAIM_STATUSES = ("issued", "used", "cancelled", "expired")
# A claim is bought with points ("purchase") or given by a perk ("gift").
CLAIM_SOURCES = ("purchase", "gift")

MAX_MONEY = 10**15  # minor units, as for orders
MAX_POINTS = 10**12
MAX_PERCENT = 100

# Crockford-style alphabet without look-alikes (0/O, 1/I/L, U), as for referral codes.
COUPON_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
# 30^16 is about 4e23 (78 bits): unguessable, and still short enough to type at a till.
COUPON_CODE_LENGTH = 16

# Why a member cannot claim a reward, in the order they are checked (the first one is given).
REFUSAL_REASONS = (
    "member_not_active",
    "inactive",
    "not_yet_available",
    "no_longer_available",
    "tier",
    "out_of_stock",
    "limit_reached",
    "insufficient_points",
)


# --- claimability ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardTerms:
    """What decides whether a reward can be claimed."""

    active: bool
    points_cost: int
    tier_codes: tuple[str, ...] = ()
    stock: int | None = None
    per_member_limit: int | None = None
    available_from: dt.datetime | None = None
    available_until: dt.datetime | None = None


@dataclass(frozen=True)
class MemberStanding:
    """What a member brings to a claim. ``available`` None skips the points check (the ledger
    checks it when spending)."""

    active: bool
    tier_code: str | None
    claims: int = 0
    available: int | None = None


def claim_refusal(terms: RewardTerms, member: MemberStanding, now: dt.datetime) -> str | None:
    """The first reason (see `REFUSAL_REASONS`) the member cannot claim the reward now, or
    None when it can. Empty ``tier_codes`` means every member, with or without a tier."""
    if not member.active:
        return "member_not_active"
    if not terms.active:
        return "inactive"
    if terms.available_from is not None and now < terms.available_from:
        return "not_yet_available"
    if terms.available_until is not None and now >= terms.available_until:
        return "no_longer_available"
    if terms.tier_codes and member.tier_code not in terms.tier_codes:
        return "tier"
    if terms.stock is not None and terms.stock <= 0:
        return "out_of_stock"
    if terms.per_member_limit is not None and member.claims >= terms.per_member_limit:
        return "limit_reached"
    if member.available is not None and member.available < terms.points_cost:
        return "insufficient_points"
    return None


# --- coupon codes ---------------------------------------------------------------------------


def new_coupon_code() -> str:
    """A random coupon code such as ``K7QM2XWPH3TRBN9A`` (see `COUPON_CODE_LENGTH`)."""
    return "".join(secrets.choice(COUPON_ALPHABET) for _ in range(COUPON_CODE_LENGTH))


def normalise_coupon_code(code: str) -> str:
    """Codes are matched without regard to case, spaces or dashes (``k7qm-2xwp-...``)."""
    return code.strip().upper().replace("-", "").replace(" ", "")


def is_coupon_code(code: str) -> bool:
    return len(code) == COUPON_CODE_LENGTH and all(c in COUPON_ALPHABET for c in code)


def coupon_expiry(issued_at: dt.datetime, valid_days: int) -> dt.datetime:
    return issued_at + dt.timedelta(days=valid_days)


# --- birthdays ------------------------------------------------------------------------------


def local_now(now: dt.datetime, time_zone: str) -> dt.datetime:
    """``now`` on the member's wall clock (UTC when the zone is unknown)."""
    try:
        zone: dt.tzinfo = zoneinfo.ZoneInfo(time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = dt.UTC
    return now.astimezone(zone)


def birthday_due(birthday: dt.date | None, time_zone: str, now: dt.datetime) -> int | None:
    """The year whose birthday gift is due now, or None: a gift is due during the whole of the
    member's birthday month, as the calendar runs in the member's time zone (so a member in
    Tokyo gets it before one in Los Angeles). One gift per perk and year."""
    if birthday is None:
        return None
    local = local_now(now, time_zone)
    return local.year if local.month == birthday.month else None


def next_due_month(
    birthday: dt.date | None, time_zone: str, now: dt.datetime, *, granted_this_year: bool
) -> str | None:
    """The month (``YYYY-MM``) in which the member's next birthday gift is due: this year's
    birthday month unless it is past or its gift was granted, else next year's."""
    if birthday is None:
        return None
    local = local_now(now, time_zone)
    year = local.year
    if birthday.month < local.month or (birthday.month == local.month and granted_this_year):
        year += 1
    return f"{year:04d}-{birthday.month:02d}"


def candidate_months(now: dt.datetime) -> set[tuple[int, int]]:
    """The (year, month) pairs that are current somewhere on Earth at ``now`` (UTC-12 to
    UTC+14): the birthday months a job run must look at."""
    return {
        ((now + offset).year, (now + offset).month)
        for offset in (dt.timedelta(hours=-12), dt.timedelta(0), dt.timedelta(hours=14))
    }


# --- values of each kind --------------------------------------------------------------------

# The value fields each kind needs; the other value fields must be empty.
REWARD_VALUE_FIELDS = {
    "fixed_discount": ("amount", "currency"),
    "percentage_discount": ("percent",),
    "free_product": ("sku",),
    "custom": (),
}
PERK_VALUE_FIELDS = {
    "free_shipping": (),
    "early_access": (),
    "exclusive_discount": ("percent",),
    "custom": (),
}


def reward_value_problems(kind: str, values: dict[str, Any]) -> list[tuple[str, str]]:
    """What is wrong with a reward's value fields for its kind, as (field, message) pairs:
    a fixed discount needs a positive amount in minor units of an ISO 4217 currency, a
    percentage discount a percent from 1 to 100, a free product a SKU."""
    problems = _fields_for_kind(kind, REWARD_VALUE_FIELDS[kind], values, _REWARD_VALUES)
    amount, currency = values.get("amount"), values.get("currency")
    if amount is not None and not 1 <= amount <= MAX_MONEY:
        problems.append(("amount", f"Must be between 1 and {MAX_MONEY} minor units."))
    if currency is not None and currency_exponent(currency) is None:
        problems.append(("currency", "Not an ISO 4217 currency."))
    problems += _percent_problems(values)
    return problems


def perk_value_problems(kind: str, values: dict[str, Any]) -> list[tuple[str, str]]:
    """What is wrong with a perk's value fields for its kind: an exclusive discount needs a
    percent from 1 to 100; a birthday gift bonus points, a reward, or both."""
    if kind == "birthday_gift":
        problems = [
            (name, "Only an exclusive_discount perk has a percent.")
            for name in ("percent",)
            if values.get(name) is not None
        ]
        if values.get("bonus_points") is None and values.get("reward_id") is None:
            problems.append(
                ("bonus_points", "A birthday gift needs bonus_points, a reward_id, or both.")
            )
    else:
        problems = _fields_for_kind(kind, PERK_VALUE_FIELDS[kind], values, _PERK_VALUES)
    bonus = values.get("bonus_points")
    if bonus is not None and not 1 <= bonus <= MAX_POINTS:
        problems.append(("bonus_points", f"Must be between 1 and {MAX_POINTS}."))
    return problems + _percent_problems(values)


_REWARD_VALUES = ("amount", "currency", "percent", "sku")
_PERK_VALUES = ("percent", "bonus_points", "reward_id")


def _fields_for_kind(
    kind: str, needed: Iterable[str], values: dict[str, Any], every: tuple[str, ...]
) -> list[tuple[str, str]]:
    needed = tuple(needed)
    problems = [(name, f"A {kind} needs {name}.") for name in needed if values.get(name) is None]
    problems += [
        (name, f"A {kind} has no {name}.")
        for name in every
        if name not in needed and values.get(name) is not None
    ]
    return problems


def _percent_problems(values: dict[str, Any]) -> list[tuple[str, str]]:
    percent = values.get("percent")
    if percent is not None and not 1 <= percent <= MAX_PERCENT:
        return [("percent", f"Must be between 1 and {MAX_PERCENT}.")]
    return []
