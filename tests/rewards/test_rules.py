"""Pure rules of rewards: claimability and its reasons, coupon codes, birthday months in the
member's time zone, and the values each kind of perk and reward needs."""

from __future__ import annotations

import datetime as dt

import pytest

from loyalty.rewards import rules
from loyalty.rewards.rules import MemberStanding, RewardTerms

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
OK = MemberStanding(active=True, tier_code="gold", claims=0, available=1000)
TERMS = RewardTerms(active=True, points_cost=100)


def test_an_open_reward_is_claimable() -> None:
    assert rules.claim_refusal(TERMS, OK, NOW) is None


@pytest.mark.parametrize(
    ("terms", "member", "reason"),
    [
        (TERMS, MemberStanding(active=False, tier_code="gold"), "member_not_active"),
        (RewardTerms(active=False, points_cost=1), OK, "inactive"),
        (
            RewardTerms(active=True, points_cost=1, available_from=NOW + HOUR),
            OK,
            "not_yet_available",
        ),
        (RewardTerms(active=True, points_cost=1, available_until=NOW), OK, "no_longer_available"),
        (RewardTerms(active=True, points_cost=1, tier_codes=("vip",)), OK, "tier"),
        (
            RewardTerms(active=True, points_cost=1, tier_codes=("gold",)),
            MemberStanding(active=True, tier_code=None),
            "tier",
        ),
        (RewardTerms(active=True, points_cost=1, stock=0), OK, "out_of_stock"),
        (
            RewardTerms(active=True, points_cost=1, per_member_limit=2),
            MemberStanding(active=True, tier_code=None, claims=2),
            "limit_reached",
        ),
        (RewardTerms(active=True, points_cost=1001), OK, "insufficient_points"),
    ],
)
def test_refusal_reasons(terms: RewardTerms, member: MemberStanding, reason: str) -> None:
    assert rules.claim_refusal(terms, member, NOW) == reason


def test_reasons_come_in_a_fixed_order() -> None:
    terms = RewardTerms(active=False, points_cost=5000, stock=0, tier_codes=("vip",))
    assert rules.claim_refusal(terms, OK, NOW) == "inactive"
    assert (
        rules.claim_refusal(
            RewardTerms(active=True, points_cost=5000, stock=0, tier_codes=("gold",)), OK, NOW
        )
        == "out_of_stock"
    )


def test_window_edges_and_unknown_points() -> None:
    open_now = RewardTerms(
        active=True, points_cost=1, available_from=NOW, available_until=NOW + HOUR
    )
    assert rules.claim_refusal(open_now, OK, NOW) is None
    assert rules.claim_refusal(open_now, OK, NOW + HOUR) == "no_longer_available"
    unknown = MemberStanding(active=True, tier_code=None, available=None)
    assert rules.claim_refusal(RewardTerms(active=True, points_cost=10**9), unknown, NOW) is None
    assert rules.claim_refusal(TERMS, MemberStanding(True, None, available=100), NOW) is None


def test_an_empty_tier_list_means_everyone() -> None:
    assert rules.claim_refusal(TERMS, MemberStanding(active=True, tier_code=None), NOW) is None


def test_coupon_codes() -> None:
    codes = {rules.new_coupon_code() for _ in range(2000)}
    assert len(codes) == 2000
    for code in codes:
        assert rules.is_coupon_code(code)
        assert len(code) == rules.COUPON_CODE_LENGTH == 16
        assert not set(code) & set("01ILOU")
    assert rules.normalise_coupon_code(" abcd-efgh jkmn-pqrs ") == "ABCDEFGHJKMNPQRS"
    assert not rules.is_coupon_code("ABCDEFGHJKMNPQR")  # too short
    assert not rules.is_coupon_code("ABCDEFGHJKMNPQR0")  # look-alike


def test_coupon_expiry() -> None:
    assert rules.coupon_expiry(NOW, 30) == NOW + dt.timedelta(days=30)


@pytest.mark.parametrize(
    ("now", "zone", "due"),
    [
        (dt.datetime(2026, 3, 10, tzinfo=dt.UTC), "UTC", 2026),
        (dt.datetime(2026, 2, 28, 23, 0, tzinfo=dt.UTC), "UTC", None),
        # Already March in Tokyo, still February in Los Angeles.
        (dt.datetime(2026, 2, 28, 16, 0, tzinfo=dt.UTC), "Asia/Tokyo", 2026),
        (dt.datetime(2026, 3, 1, 5, 0, tzinfo=dt.UTC), "America/Los_Angeles", None),
        (dt.datetime(2026, 4, 1, 5, 0, tzinfo=dt.UTC), "America/Los_Angeles", 2026),
        (dt.datetime(2026, 4, 1, 5, 0, tzinfo=dt.UTC), "Not/A_Zone", None),
    ],
)
def test_birthday_due_in_the_members_time_zone(
    now: dt.datetime, zone: str, due: int | None
) -> None:
    assert rules.birthday_due(dt.date(1990, 3, 25), zone, now) == due


def test_birthday_due_at_the_turn_of_the_year() -> None:
    new_year_in_auckland = dt.datetime(2026, 12, 31, 12, 0, tzinfo=dt.UTC)
    assert rules.birthday_due(dt.date(1990, 1, 2), "Pacific/Auckland", new_year_in_auckland) == 2027
    assert rules.birthday_due(dt.date(1990, 12, 2), "UTC", new_year_in_auckland) == 2026
    assert rules.birthday_due(None, "UTC", new_year_in_auckland) is None
    assert rules.birthday_due(dt.date(2000, 2, 29), "UTC", dt.datetime(2027, 2, 1, tzinfo=dt.UTC))


def test_next_due_month() -> None:
    march = dt.date(1990, 3, 25)
    assert rules.next_due_month(march, "UTC", NOW, granted_this_year=False) == "2026-03"
    assert rules.next_due_month(march, "UTC", NOW, granted_this_year=True) == "2027-03"
    assert rules.next_due_month(dt.date(1990, 1, 5), "UTC", NOW, granted_this_year=False) == (
        "2027-01"
    )
    assert rules.next_due_month(dt.date(1990, 7, 5), "UTC", NOW, granted_this_year=False) == (
        "2026-07"
    )
    assert rules.next_due_month(None, "UTC", NOW, granted_this_year=False) is None


def test_candidate_months_cover_every_time_zone() -> None:
    assert rules.candidate_months(NOW) == {(2026, 3)}
    assert rules.candidate_months(dt.datetime(2026, 12, 31, 20, 0, tzinfo=dt.UTC)) == {
        (2026, 12),
        (2027, 1),
    }
    assert rules.candidate_months(dt.datetime(2026, 4, 1, 3, 0, tzinfo=dt.UTC)) == {
        (2026, 3),
        (2026, 4),
    }


@pytest.mark.parametrize(
    ("kind", "values", "problems"),
    [
        ("fixed_discount", {"amount": 500, "currency": "USD"}, []),
        ("fixed_discount", {"amount": 500}, [("currency", "A fixed_discount needs currency.")]),
        ("fixed_discount", {"amount": 0, "currency": "USD"}, ["amount"]),
        ("fixed_discount", {"amount": 5, "currency": "XYZ"}, ["currency"]),
        ("percentage_discount", {"percent": 15}, []),
        ("percentage_discount", {"percent": 101}, ["percent"]),
        ("percentage_discount", {"percent": 0}, ["percent"]),
        ("percentage_discount", {}, ["percent"]),
        ("percentage_discount", {"percent": 10, "sku": "x"}, ["sku"]),
        ("free_product", {"sku": "mug"}, []),
        ("free_product", {}, ["sku"]),
        ("custom", {}, []),
        ("custom", {"percent": 10}, ["percent"]),
    ],
)
def test_reward_values(kind: str, values: dict[str, object], problems: list[object]) -> None:
    found = rules.reward_value_problems(kind, values)
    if problems and isinstance(problems[0], str):
        assert [field for field, _ in found] == problems
    else:
        assert found == problems


@pytest.mark.parametrize(
    ("kind", "values", "fields"),
    [
        ("exclusive_discount", {"percent": 10}, []),
        ("exclusive_discount", {}, ["percent"]),
        ("exclusive_discount", {"percent": 200}, ["percent"]),
        ("birthday_gift", {"bonus_points": 100}, []),
        ("birthday_gift", {"reward_id": "rwd_1"}, []),
        ("birthday_gift", {"bonus_points": 100, "reward_id": "rwd_1"}, []),
        ("birthday_gift", {}, ["bonus_points"]),
        ("birthday_gift", {"bonus_points": 0}, ["bonus_points"]),
        ("birthday_gift", {"bonus_points": 5, "percent": 5}, ["percent"]),
        ("free_shipping", {}, []),
        ("free_shipping", {"bonus_points": 5}, ["bonus_points"]),
        ("early_access", {"reward_id": "rwd_1"}, ["reward_id"]),
    ],
)
def test_perk_values(kind: str, values: dict[str, object], fields: list[str]) -> None:
    assert [field for field, _ in rules.perk_value_problems(kind, values)] == fields
