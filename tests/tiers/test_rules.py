"""Pure rules of the tier ladder: qualification, windows, review dates, review outcomes and
progress."""

from __future__ import annotations

import datetime as dt

import pytest

from loyalty.tiers import rules
from loyalty.tiers.rules import Rung

BRONZE = Rung("bronze", "Bronze", 1, 0)
SILVER = Rung("silver", "Silver", 2, 500)
GOLD = Rung("gold", "Gold", 3, 1000, retain_threshold=800)
LADDER = [GOLD, BRONZE, SILVER]  # any order: rules sort by rank
NOW = dt.datetime(2026, 5, 20, 9, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, BRONZE), (499, BRONZE), (500, SILVER), (999, SILVER), (1000, GOLD), (10**9, GOLD)],
)
def test_qualified_tier_is_the_highest_threshold_reached(value: int, expected: Rung) -> None:
    assert rules.qualified_tier(LADDER, value) == expected


def test_no_tier_below_the_lowest_threshold() -> None:
    ladder = [SILVER, GOLD]
    assert rules.qualified_tier(ladder, 499) is None
    assert rules.base_tier(ladder) is None
    assert rules.base_tier(LADDER) == BRONZE


def test_ladder_problems() -> None:
    assert rules.ladder_problem(LADDER) is None
    assert rules.ladder_problem([]) is None
    clash = rules.ladder_problem([BRONZE, Rung("x", "X", 2, 0)])
    assert clash is not None and "rise with rank" in clash
    retain = rules.ladder_problem([Rung("x", "X", 1, 10, retain_threshold=11)])
    assert retain is not None and "retain_threshold" in retain
    negative = rules.ladder_problem([Rung("x", "X", 1, -1)])
    assert negative is not None and "negative" in negative


@pytest.mark.parametrize(
    ("code", "ok"),
    [("gold", True), ("vip-2", True), ("Gold", False), ("-x", False), ("a--b", False), ("", False)],
)
def test_codes_are_slugs(code: str, ok: bool) -> None:
    assert rules.is_code(code) is ok


def test_window_starts() -> None:
    assert rules.window_start("lifetime", NOW) is None
    assert rules.window_start("rolling_12_months", NOW) == dt.datetime(
        2025, 5, 20, 9, 30, tzinfo=dt.UTC
    )
    assert rules.window_start("calendar_year", NOW) == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="unknown window"):
        rules.window_start("weekly", NOW)


def test_period_ends() -> None:
    assert rules.period_end("lifetime", NOW) is None
    assert rules.period_end("calendar_year", NOW) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert rules.period_end("rolling_12_months", NOW) == dt.datetime(
        2027, 5, 20, 9, 30, tzinfo=dt.UTC
    )
    leap = dt.datetime(2028, 2, 29, tzinfo=dt.UTC)
    assert rules.period_end("rolling_12_months", leap) == dt.datetime(2029, 2, 28, tzinfo=dt.UTC)


def test_review_dates_add_the_grace_period() -> None:
    assert rules.review_date("calendar_year", NOW, 30, SILVER) == dt.datetime(
        2027, 1, 31, tzinfo=dt.UTC
    )
    assert rules.review_date("rolling_12_months", NOW, 0, SILVER) == dt.datetime(
        2027, 5, 20, 9, 30, tzinfo=dt.UTC
    )
    assert rules.review_date("lifetime", NOW, 30, SILVER) is None
    assert rules.review_date("calendar_year", NOW, 30, BRONZE) is None  # kept at 0
    assert rules.review_date("calendar_year", NOW, 30, None) is None
    assert rules.review_date("calendar_year", None, 30, SILVER) is None


def test_next_review_catches_up_with_periods_already_over() -> None:
    since = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    assert rules.next_review("calendar_year", since, 10, SILVER, NOW) == (
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2027, 1, 11, tzinfo=dt.UTC),
    )
    recent = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    assert rules.next_review("rolling_12_months", recent, 0, SILVER, NOW) == (
        recent,
        dt.datetime(2027, 2, 1, tzinfo=dt.UTC),
    )
    assert rules.next_review("lifetime", since, 0, SILVER, NOW) == (since, None)


def test_review_renews_when_the_retain_threshold_is_met() -> None:
    assert rules.review_outcome(LADDER, GOLD, 800, "one_step") == rules.Outcome("renewal", GOLD)
    assert rules.review_outcome(LADDER, SILVER, 500, "recompute") == rules.Outcome(
        "renewal", SILVER
    )


def test_review_upgrades_when_a_higher_threshold_is_met() -> None:
    assert rules.review_outcome(LADDER, SILVER, 1000, "one_step") == rules.Outcome("upgrade", GOLD)


def test_one_step_goes_down_one_rank_at_most() -> None:
    assert rules.review_outcome(LADDER, GOLD, 0, "one_step") == rules.Outcome("downgrade", SILVER)
    assert rules.review_outcome(LADDER, SILVER, 0, "one_step") == rules.Outcome("downgrade", BRONZE)
    assert rules.review_outcome([SILVER, GOLD], SILVER, 0, "one_step") == rules.Outcome(
        "downgrade", None
    )


def test_one_step_never_goes_below_what_the_value_qualifies_for() -> None:
    four = [*LADDER, Rung("platinum", "Platinum", 4, 5000)]
    platinum = four[-1]
    assert rules.review_outcome(four, platinum, 1200, "one_step") == rules.Outcome(
        "downgrade", GOLD
    )
    assert rules.review_outcome(four, platinum, 100, "one_step") == rules.Outcome("downgrade", GOLD)


def test_recompute_goes_straight_to_the_qualified_tier() -> None:
    assert rules.review_outcome(LADDER, GOLD, 100, "recompute") == rules.Outcome(
        "downgrade", BRONZE
    )
    assert rules.review_outcome(LADDER, GOLD, 700, "recompute") == rules.Outcome(
        "downgrade", SILVER
    )
    assert rules.review_outcome([SILVER, GOLD], GOLD, 10, "recompute") == rules.Outcome(
        "downgrade", None
    )


def test_progress_to_the_next_tier() -> None:
    progress = rules.progress(LADDER, SILVER, 760, metric="points", window="calendar_year", now=NOW)
    assert progress == rules.Progress(
        next_tier=GOLD,
        metric="points",
        current=760,
        threshold=1000,
        remaining=240,
        deadline=dt.date(2026, 12, 31),
        message="240 more points to Gold by 31 Dec 2026",
    )


def test_progress_without_a_tier_aims_at_the_lowest() -> None:
    progress = rules.progress(
        [SILVER, GOLD], None, 499, metric="orders", window="lifetime", now=NOW
    )
    assert progress is not None
    assert (progress.next_tier, progress.remaining, progress.deadline) == (SILVER, 1, None)
    assert progress.message == "1 more order to Silver"


def test_no_progress_at_the_top() -> None:
    assert rules.progress(LADDER, GOLD, 5, metric="points", window="lifetime", now=NOW) is None


def test_progress_messages_per_metric() -> None:
    assert rules.progress_message("spend", 120, "Gold", None) == "Spend 120 more to reach Gold"
    assert rules.progress_message("orders", 3, "Gold", None) == "3 more orders to Gold"
    assert rules.progress_message("points", 1, "Gold", dt.date(2026, 1, 5)) == (
        "1 more point to Gold by 5 Jan 2026"
    )


def test_the_window_ending_with_a_period() -> None:
    new_year = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert rules.window_ending("calendar_year", new_year) == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert rules.window_ending("rolling_12_months", NOW) == dt.datetime(
        2025, 5, 20, 9, 30, tzinfo=dt.UTC
    )
    assert rules.window_ending("lifetime", NOW) is None
