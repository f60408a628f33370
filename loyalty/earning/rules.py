"""Pure earning rules: what an order earns and why. No database, no Flask.

The order in which rules apply (README "How an order earns points" explains it to managers):

1. Items in excluded categories earn nothing and do not count towards the minimum order.
2. An order whose remaining total is below the minimum order (same currency) earns nothing.
3. **Base**: the order's total, shared over its items by price (so discounts and shipping
   spread evenly), times the base rate, rounded once with the programme's rounding mode.
4. **Product multipliers**: an item of a SKU or category with a multiplier adds
   ``(multiplier - 1) x`` its exact base share (a SKU multiplier wins over its category's);
   each multiplier's extra points are rounded once.
5. **Tier multiplier**: adds ``(multiplier - 1) x`` the rounded base.
6. **Campaigns** running when the order was placed, for a target the member is in, in start
   order (only for an order with something eligible): each adds ``(multiplier - 1) x`` the
   rounded base and/or its fixed bonus, at most what is left of its budget.
7. **Caps**: the total is cut to what the member may still earn today and this month (days
   and months in the member's time zone); the cut comes off the last-applied bonuses first.

Multipliers add to the base rather than compounding: Gold x1.25 and a x2 campaign on a base
of 120 give 120 + 30 + 120 = 270. Negative results are impossible: the total is at least 0.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from loyalty.ledger.rules import split_points

MULTIPLIER_SCOPES = ("category", "sku")
CAMPAIGN_TARGETS = ("all", "tiers", "stages", "members")
ROUNDINGS = ("floor", "half_up", "ceiling")


def round_points(value: Fraction, rounding: str) -> int:
    """Round exact points to an integer; negative values round like their magnitude (so a
    0.5x multiplier never takes more than the base gave)."""
    if value < 0:
        return -round_points(-value, rounding)
    if rounding == "floor":
        return math.floor(value)
    if rounding == "ceiling":
        return math.ceil(value)
    if rounding == "half_up":
        return math.floor(value + Fraction(1, 2))
    raise ValueError(f"unknown rounding {rounding!r}")


def _multiplier_text(multiplier: Decimal) -> str:
    text = format(multiplier.normalize(), "f")
    return f"x{text}"


@dataclass(frozen=True)
class Line:
    """One item of an order: its price in minor units (quantity x unit price)."""

    sku: str
    category: str | None
    amount: int


@dataclass(frozen=True)
class ProductRule:
    id: str
    scope: str  # category or sku
    match: str
    multiplier: Decimal
    label: str | None = None

    def describe(self) -> str:
        return self.label or f"{self.match} {_multiplier_text(self.multiplier)}"


@dataclass(frozen=True)
class TierRule:
    code: str
    name: str
    multiplier: Decimal


@dataclass(frozen=True)
class CampaignRule:
    id: str
    name: str
    multiplier: Decimal | None
    bonus_points: int | None
    budget_left: int | None  # None: no budget


@dataclass(frozen=True)
class Limits:
    minimum_total: int | None = None
    minimum_currency: str | None = None
    excluded_categories: frozenset[str] = frozenset()
    daily_room: int | None = None  # points the member may still earn today; None: no cap
    monthly_room: int | None = None


@dataclass(frozen=True)
class Component:
    """One rule's contribution to an order's points."""

    rule: str  # base, product:<id>, tier:<code>, campaign:<id>, cap:daily, cap:monthly
    kind: str  # base, product, tier, campaign, cap
    label: str
    points: int

    def as_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "kind": self.kind, "label": self.label, "points": self.points}


@dataclass(frozen=True)
class Quote:
    """What an order earns: the total, the rules that produced it, each item's share, and
    the points each budgeted campaign gives (to charge to its budget)."""

    points: int
    components: list[Component]
    line_points: list[int]
    campaign_points: dict[str, int] = field(default_factory=dict)
    eligible_amount: int = 0
    note: str | None = None  # why the order earns nothing, when it does not

    def describe(self) -> str:
        """``base 120 + Gold x1.25 +30 + Double Points November x2 +120``."""
        if self.note:
            return self.note
        parts = []
        for component in self.components:
            if component.kind == "base":
                parts.append(f"base {component.points}")
            else:
                parts.append(f"{component.label} {component.points:+d}")
        return " + ".join(parts)


def quote(
    *,
    total: int,
    currency: str,
    exponent: int,
    rate: Decimal,
    rounding: str,
    lines: Sequence[Line] = (),
    products: Sequence[ProductRule] = (),
    tier: TierRule | None = None,
    campaigns: Sequence[CampaignRule] = (),
    limits: Limits = Limits(),
) -> Quote:
    """What an order of ``total`` minor units earns under these rules (see the module doc
    for the order in which they apply)."""
    priced = [line for line in lines if line.amount > 0]
    weight_sum = sum(line.amount for line in priced)
    # Each line's share of the total (exact); without priced lines the total stands alone.
    if weight_sum:
        shares = [
            Fraction(total * line.amount, weight_sum) if line.amount > 0 else Fraction(0)
            for line in lines
        ]
        excluded = [line.category in limits.excluded_categories for line in lines]
    else:
        shares, excluded = [], []
    eligible = (
        sum((s for s, out in zip(shares, excluded, strict=True) if not out), Fraction(0))
        if weight_sum
        else Fraction(total)
    )
    eligible_amount = math.floor(eligible)
    zero_lines = [0] * len(lines)

    if (
        limits.minimum_total is not None
        and limits.minimum_currency == currency
        and eligible < limits.minimum_total
    ):
        return Quote(
            0,
            [],
            zero_lines,
            eligible_amount=eligible_amount,
            note=f"below the minimum order of {limits.minimum_total} {currency} minor units",
        )

    unit = Fraction(rate) / (10**exponent)
    exact = [
        share * unit if not out else Fraction(0)
        for share, out in zip(shares, excluded, strict=True)
    ]
    exact_base = sum(exact, Fraction(0)) if weight_sum else eligible * unit
    base = round_points(exact_base, rounding)
    components = [Component("base", "base", "base", base)]

    # Product multipliers: a SKU's rule wins over its category's.
    by_sku = {p.match: p for p in products if p.scope == "sku"}
    by_category = {p.match: p for p in products if p.scope == "category"}
    extras: dict[str, Fraction] = {}
    rule_of: dict[str, ProductRule] = {}
    multipliers: list[Fraction] = []
    for line, line_exact, out in zip(lines, exact if weight_sum else [], excluded, strict=False):
        rule = by_sku.get(line.sku) or (by_category.get(line.category) if line.category else None)
        factor = Fraction(rule.multiplier) if rule else Fraction(1)
        multipliers.append(factor)
        if rule is None or out or factor == 1:
            continue
        extras[rule.id] = extras.get(rule.id, Fraction(0)) + line_exact * (factor - 1)
        rule_of[rule.id] = rule
    for rule_id, extra in extras.items():
        points = round_points(extra, rounding)
        if points:
            rule = rule_of[rule_id]
            components.append(Component(f"product:{rule_id}", "product", rule.describe(), points))

    if tier is not None and tier.multiplier != 1:
        points = round_points(base * (Fraction(tier.multiplier) - 1), rounding)
        if points:
            label = f"{tier.name} {_multiplier_text(tier.multiplier)}"
            components.append(Component(f"tier:{tier.code}", "tier", label, points))

    campaign_points: dict[str, int] = {}
    # Campaigns reward purchases: an order with nothing eligible gets no bonus.
    for campaign in campaigns if eligible > 0 else ():
        points = 0
        label = campaign.name
        if campaign.multiplier is not None:
            points += round_points(base * (Fraction(campaign.multiplier) - 1), rounding)
            label += f" {_multiplier_text(campaign.multiplier)}"
        if campaign.bonus_points:
            points += campaign.bonus_points
        if campaign.budget_left is not None:
            points = min(points, max(campaign.budget_left, 0))
        if points > 0:
            components.append(Component(f"campaign:{campaign.id}", "campaign", label, points))
            campaign_points[campaign.id] = points

    total_points = max(0, sum(c.points for c in components))
    rooms = [
        (room, name)
        for room, name in ((limits.daily_room, "daily"), (limits.monthly_room, "monthly"))
        if room is not None
    ]
    if rooms:
        room, name = min(rooms)
        room = max(room, 0)
        if total_points > room:
            cut = total_points - room
            components, campaign_points = _trim(components, campaign_points, cut)
            components.append(Component(f"cap:{name}", "cap", f"{name} cap", -cut))
            total_points = room

    # Each item's share of the points (for refunds by item); with no priced item, the first
    # item carries them all.
    weights = [0] * len(lines)
    if weight_sum:
        weights = [
            0 if out else int(line.amount * factor * 10_000)
            for line, factor, out in zip(lines, multipliers, excluded, strict=True)
        ]
    line_points = split_points(total_points, weights) if lines else []
    return Quote(
        total_points,
        components,
        line_points,
        campaign_points=campaign_points,
        eligible_amount=eligible_amount,
    )


def _trim(
    components: list[Component], campaign_points: dict[str, int], cut: int
) -> tuple[list[Component], dict[str, int]]:
    """Which campaigns lose points to a cap: the last applied first. The components stay as
    computed (the cap shows as its own negative component); only budget charges change."""
    charges = dict(campaign_points)
    left = cut
    for component in reversed(components):
        if left <= 0:
            break
        if component.kind == "campaign":
            campaign_id = component.rule.split(":", 1)[1]
            take = min(charges[campaign_id], left)
            charges[campaign_id] -= take
            left -= take
        elif component.points > 0:
            left -= min(component.points, left)
    return components, {k: v for k, v in charges.items() if v > 0}


def in_holdout(campaign_id: str, member_id: str, holdout_pct: int | None) -> bool:
    """Whether the member is in the campaign's held-out share: the first 8 bytes of
    sha-256(``campaign_id:member_id``) as a fraction of 2**64, below ``holdout_pct`` percent.
    The same member and campaign always land on the same side, on every machine."""
    if not holdout_pct:
        return False
    digest = hashlib.sha256(f"{campaign_id}:{member_id}".encode()).digest()
    return Fraction(int.from_bytes(digest[:8], "big"), 2**64) < Fraction(holdout_pct, 100)


def targets(
    target: str,
    values: Sequence[str],
    *,
    member_id: str,
    tier_code: str | None,
    stage: str | None,
) -> bool:
    """Whether a campaign aimed at ``target``/``values`` applies to this member."""
    if target == "all":
        return True
    if target == "tiers":
        return tier_code is not None and tier_code in values
    if target == "stages":
        return stage is not None and stage in values
    if target == "members":
        return member_id in values
    raise ValueError(f"unknown campaign target {target!r}")
