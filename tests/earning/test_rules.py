"""Pure earning rules: rounding, the order in which multipliers, bonuses and caps apply."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loyalty.earning import rules
from loyalty.earning.rules import CampaignRule, Limits, Line, ProductRule, TierRule
from loyalty.ledger.rules import points_for_amount


def quote(total: int, **kwargs: object) -> rules.Quote:
    defaults: dict[str, object] = {
        "currency": "USD",
        "exponent": 2,
        "rate": Decimal(1),
        "rounding": "floor",
    }
    defaults.update(kwargs)
    return rules.quote(total=total, **defaults)  # type: ignore[arg-type]


GOLD = TierRule("gold", "Gold", Decimal("1.25"))
DOUBLE = CampaignRule("cmp_1", "Double Points November", Decimal(2), None, None)


def test_base_only_matches_the_core_rate() -> None:
    result = quote(12345)
    assert result.points == 123
    assert result.describe() == "base 123"
    assert [c.kind for c in result.components] == ["base"]


@pytest.mark.parametrize(
    ("rounding", "expected"), [("floor", 12), ("half_up", 13), ("ceiling", 13)]
)
def test_base_rounds_once_with_the_programmes_mode(rounding: str, expected: int) -> None:
    assert quote(1250, rounding=rounding).points == expected


def test_round_points_is_symmetric_for_negative_values() -> None:
    assert rules.round_points(Fraction(-7, 2), "floor") == -3
    assert rules.round_points(Fraction(-7, 2), "half_up") == -4
    assert rules.round_points(Fraction(7, 2), "ceiling") == 4


def test_the_issue_example_adds_multipliers_to_the_base() -> None:
    result = quote(12000, tier=GOLD, campaigns=[DOUBLE])
    assert result.points == 120 + 30 + 120
    assert result.describe() == "base 120 + Gold x1.25 +30 + Double Points November x2 +120"
    assert result.campaign_points == {"cmp_1": 120}


def test_category_and_sku_multipliers_apply_to_their_items_share() -> None:
    lines = [
        Line("boot", "shoes", 6000),
        Line("sock", "apparel", 2000),
        Line("hat", "apparel", 2000),
    ]
    products = [
        ProductRule("m1", "category", "shoes", Decimal(3)),
        ProductRule("m2", "category", "apparel", Decimal("1.5")),
        ProductRule("m3", "sku", "hat", Decimal(2), "Hat week"),
    ]
    # The total (90.00 after a discount) is shared by price: boot 54, sock 18, hat 18.
    result = quote(9000, lines=lines, products=products)
    assert [(c.label, c.points) for c in result.components] == [
        ("base", 90),
        ("shoes x3", 108),  # 54 x (3 - 1)
        ("apparel x1.5", 9),  # sock 18 x 0.5; the hat's SKU rule wins over apparel
        ("Hat week", 18),
    ]
    assert result.points == 225
    assert sum(result.line_points) == 225
    assert result.line_points[0] > result.line_points[1]


def test_a_multiplier_below_one_lowers_an_items_points() -> None:
    lines = [Line("a", "sale", 10000)]
    result = quote(
        10000, lines=lines, products=[ProductRule("m", "category", "sale", Decimal("0.5"))]
    )
    assert result.points == 50
    assert result.describe() == "base 100 + sale x0.5 -50"


def test_excluded_categories_earn_nothing_and_do_not_count_towards_the_minimum() -> None:
    lines = [Line("card", "gift-cards", 5000), Line("tee", "apparel", 3000)]
    limits = Limits(
        minimum_total=4000, minimum_currency="USD", excluded_categories=frozenset({"gift-cards"})
    )
    result = quote(8000, lines=lines, limits=limits)
    assert result.points == 0
    assert result.note is not None and "minimum" in result.note
    assert result.eligible_amount == 3000
    ok = quote(8000, lines=lines, limits=Limits(excluded_categories=frozenset({"gift-cards"})))
    assert ok.points == 30
    assert ok.line_points == [0, 30]


def test_the_minimum_applies_only_to_orders_in_its_currency() -> None:
    limits = Limits(minimum_total=5000, minimum_currency="EUR")
    assert quote(1000, limits=limits).points == 10
    assert quote(1000, currency="EUR", limits=limits).points == 0
    assert quote(5000, currency="EUR", limits=limits).points == 50


def test_fixed_bonus_and_budget() -> None:
    bonus = CampaignRule("cmp_b", "Welcome", None, 50, 30)
    result = quote(10000, campaigns=[bonus])
    assert result.points == 130
    assert result.campaign_points == {"cmp_b": 30}
    both = CampaignRule("cmp_c", "Weekend", Decimal("1.5"), 10, None)
    assert quote(10000, campaigns=[both]).points == 100 + 50 + 10


def test_an_order_with_nothing_eligible_gets_no_campaign_bonus() -> None:
    bonus = CampaignRule("cmp_b", "Welcome", None, 50, None)
    lines = [Line("card", "gift-cards", 5000)]
    limits = Limits(excluded_categories=frozenset({"gift-cards"}))
    assert quote(5000, lines=lines, campaigns=[bonus], limits=limits).points == 0
    assert quote(0, campaigns=[bonus]).points == 0
    assert quote(1, campaigns=[bonus]).points == 50


def test_an_exhausted_budget_gives_nothing() -> None:
    spent = CampaignRule("cmp_s", "Spent", Decimal(2), None, 0)
    result = quote(10000, campaigns=[spent])
    assert result.points == 100
    assert result.campaign_points == {}


def test_caps_cut_the_last_applied_bonuses_first() -> None:
    result = quote(10000, tier=GOLD, campaigns=[DOUBLE], limits=Limits(daily_room=150))
    # base 100 + tier 25 + campaign 100 = 225, cut by 75: all from the campaign.
    assert result.points == 150
    assert result.components[-1].label == "daily cap"
    assert result.components[-1].points == -75
    assert result.campaign_points == {"cmp_1": 25}
    assert result.describe().endswith(" + daily cap -75")


def test_the_tighter_cap_wins_and_a_full_cap_earns_nothing() -> None:
    result = quote(10000, campaigns=[DOUBLE], limits=Limits(daily_room=500, monthly_room=120))
    assert result.points == 120
    assert result.components[-1].rule == "cap:monthly"
    assert result.campaign_points == {"cmp_1": 20}
    full = quote(10000, campaigns=[DOUBLE], limits=Limits(daily_room=0))
    assert full.points == 0
    assert full.campaign_points == {}


def test_orders_without_priced_items_earn_on_the_total() -> None:
    result = quote(5000, lines=[Line("free", None, 0), Line("gift", None, 0)])
    assert result.points == 50
    assert result.line_points == [50, 0]


@given(
    total=st.integers(min_value=0, max_value=10**9),
    prices=st.lists(st.integers(min_value=0, max_value=10**6), max_size=6),
    rate=st.sampled_from([Decimal(1), Decimal("2.5"), Decimal("0.1")]),
    rounding=st.sampled_from(rules.ROUNDINGS),
)
def test_without_rules_the_quote_is_the_core_rate_and_items_add_up(
    total: int, prices: list[int], rate: Decimal, rounding: str
) -> None:
    lines = [Line(f"s{i}", None, price) for i, price in enumerate(prices)]
    result = quote(total, lines=lines, rate=rate, rounding=rounding)
    assert result.points == points_for_amount(total, 2, rate, rounding)
    if any(prices):
        assert sum(result.line_points) == result.points


@given(
    total=st.integers(min_value=0, max_value=10**8),
    multiplier=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(100), places=4),
    room=st.none() | st.integers(min_value=0, max_value=10**6),
)
def test_points_are_never_negative_and_never_above_the_cap(
    total: int, multiplier: Decimal, room: int | None
) -> None:
    lines = [Line("a", "c", 100), Line("b", None, 300)]
    result = quote(
        total,
        lines=lines,
        products=[ProductRule("m", "category", "c", multiplier)],
        tier=GOLD,
        campaigns=[DOUBLE],
        limits=Limits(daily_room=room),
    )
    assert result.points >= 0
    if room is not None:
        assert result.points <= room
    assert sum(result.line_points) == result.points
    assert sum(result.campaign_points.values()) <= 2 * result.points + 1


@pytest.mark.parametrize(
    ("target", "values", "expected"),
    [
        ("all", [], True),
        ("tiers", ["gold"], True),
        ("tiers", ["silver"], False),
        ("stages", ["silent", "churned"], True),
        ("stages", ["new"], False),
        ("members", ["mem_1"], True),
        ("members", ["mem_2"], False),
    ],
)
def test_campaign_targets(target: str, values: list[str], expected: bool) -> None:
    assert (
        rules.targets(target, values, member_id="mem_1", tier_code="gold", stage="silent")
        is expected
    )


def test_a_member_without_a_tier_is_in_no_tier_target() -> None:
    assert not rules.targets("tiers", ["gold"], member_id="m", tier_code=None, stage=None)
