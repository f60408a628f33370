"""Pure community rules: property validation, points and caps, streaks across time zones and
grace, badge levels and progress, leaderboard ranks."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from loyalty.community import rules

D = dt.date
DEFS = {
    "co2_kg": {"type": "number", "required": True},
    "items": {"type": "integer", "required": False},
    "where": {"type": "string", "required": False},
    "verified": {"type": "boolean", "required": False},
}


def test_valid_properties_have_no_problems() -> None:
    props = {"co2_kg": 2.5, "items": 3, "where": "Depot", "verified": True}
    assert rules.property_problems(DEFS, props) == []
    assert rules.property_problems(DEFS, {"co2_kg": 4}) == []  # an integer is a number


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({}, [("co2_kg", "Missing required property.")]),
        ({"co2_kg": None}, [("co2_kg", "Missing required property.")]),
        ({"co2_kg": "2"}, [("co2_kg", "Must be a number.")]),
        ({"co2_kg": True}, [("co2_kg", "Must be a number.")]),
        ({"co2_kg": 1, "items": 1.5}, [("items", "Must be an integer.")]),
        ({"co2_kg": 1, "items": False}, [("items", "Must be an integer.")]),
        ({"co2_kg": 1, "where": 3}, [("where", "Must be a string.")]),
        ({"co2_kg": 1, "verified": "yes"}, [("verified", "Must be a boolean.")]),
        ({"co2_kg": 1, "colour": "red"}, [("colour", "Unknown property for this event type.")]),
        ({"co2_kg": float("inf")}, [("co2_kg", "Must be a number.")]),
    ],
)
def test_property_problems(props: dict[str, object], expected: list[tuple[str, str]]) -> None:
    assert rules.property_problems(DEFS, props) == expected


def test_event_points_fixed_per_unit_and_rounded_down() -> None:
    terms = rules.EventRuleTerms(points=10)
    assert rules.event_points(terms, {}, 0) == 10
    per_kg = rules.EventRuleTerms(points=1, per_unit_property="co2_kg", points_per_unit=Decimal(2))
    assert rules.event_points(per_kg, {"co2_kg": 2.75}, 0) == 6  # 1 + floor(5.5)
    assert rules.event_points(per_kg, {}, 0) == 1


def test_event_points_stop_at_the_cap() -> None:
    terms = rules.EventRuleTerms(points=10, cap=5, cap_period="month")
    assert rules.event_points(terms, {}, 4) == 10
    assert rules.event_points(terms, {}, 5) == 0


def test_cap_period_bounds() -> None:
    assert rules.cap_period_bounds(D(2026, 3, 10), "day") == (D(2026, 3, 10), D(2026, 3, 11))
    assert rules.cap_period_bounds(D(2026, 3, 10), "month") == (D(2026, 3, 1), D(2026, 4, 1))
    assert rules.cap_period_bounds(D(2026, 12, 31), "month") == (D(2026, 12, 1), D(2027, 1, 1))


def test_local_date_follows_the_member_time_zone() -> None:
    moment = dt.datetime(2026, 3, 10, 23, 30, tzinfo=dt.UTC)
    assert rules.local_date(moment, "UTC") == D(2026, 3, 10)
    assert rules.local_date(moment, "Europe/Berlin") == D(2026, 3, 11)
    assert rules.local_date(moment, "America/Los_Angeles") == D(2026, 3, 10)
    early = dt.datetime(2026, 3, 10, 3, 0, tzinfo=dt.UTC)
    assert rules.local_date(early, "America/Los_Angeles") == D(2026, 3, 9)
    assert rules.local_date(moment, "Not/AZone") == D(2026, 3, 10)


def test_streak_counts_consecutive_days_once_each() -> None:
    days = [D(2026, 3, 1), D(2026, 3, 1), D(2026, 3, 2), D(2026, 3, 3)]
    assert rules.streak_of(days, 0) == rules.Streak(3, 3, D(2026, 3, 3))


def test_same_day_and_late_check_ins_do_not_count() -> None:
    streak = rules.streak_of([D(2026, 3, 1), D(2026, 3, 2)], 0)
    assert rules.advance_streak(streak, D(2026, 3, 2), 0) == (streak, False)
    assert rules.advance_streak(streak, D(2026, 3, 1), 0) == (streak, False)


def test_a_missed_day_breaks_the_streak_without_grace() -> None:
    streak = rules.streak_of([D(2026, 3, 1), D(2026, 3, 2), D(2026, 3, 4)], 0)
    assert (streak.current, streak.longest) == (1, 2)


def test_grace_days_keep_the_streak() -> None:
    days = [D(2026, 3, 1), D(2026, 3, 2), D(2026, 3, 4), D(2026, 3, 7)]
    assert rules.streak_of(days, 1).current == 1  # 2 missed days after the 4th
    assert rules.streak_of(days, 2).current == 4


def test_streak_across_time_zones() -> None:
    # 23:30 UTC on two evenings is two days in UTC but Berlin counts 00:30 local.
    first = dt.datetime(2026, 3, 10, 22, 30, tzinfo=dt.UTC)  # Berlin 23:30 on the 10th
    second = dt.datetime(2026, 3, 10, 23, 30, tzinfo=dt.UTC)  # Berlin 00:30 on the 11th
    berlin = [rules.local_date(m, "Europe/Berlin") for m in (first, second)]
    utc = [rules.local_date(m, "UTC") for m in (first, second)]
    assert rules.streak_of(berlin, 0).current == 2
    assert rules.streak_of(utc, 0).current == 1


def test_streak_as_of_today() -> None:
    streak = rules.streak_of([D(2026, 3, 1), D(2026, 3, 2)], 0)
    assert rules.streak_as_of(streak, D(2026, 3, 3), 0) == 2  # today not yet checked in
    assert rules.streak_as_of(streak, D(2026, 3, 4), 0) == 0
    assert rules.streak_as_of(streak, D(2026, 3, 4), 1) == 2
    assert rules.streak_as_of(rules.Streak(), D(2026, 3, 4), 1) == 0


LEVELS = [
    {"name": "bronze", "threshold": 3, "bonus_points": 10},
    {"name": "silver", "threshold": 10, "bonus_points": 50},
    {"name": "gold", "threshold": "25.5"},
]


def test_levels_and_progress() -> None:
    levels = rules.levels_of(LEVELS)
    assert [level.number for level in rules.levels_reached(levels, Decimal(10))] == [1, 2]
    start = rules.progress(levels, Decimal(0))
    assert (start.level, start.next_level, start.remaining) == (0, levels[0], Decimal(3))
    middle = rules.progress(levels, Decimal(12))
    assert (middle.level, middle.next_level, middle.remaining) == (2, levels[2], Decimal("13.5"))
    top = rules.progress(levels, Decimal(30))
    assert (top.level, top.next_level, top.remaining) == (3, None, None)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ([], "A badge needs at least one level."),
        ([{"name": "a", "threshold": 5}, {"name": "b", "threshold": 5}], "strictly increase"),
        ([{"name": "a", "threshold": 1}, {"name": "a", "threshold": 2}], "names must differ"),
    ],
)
def test_level_problems(raw: list[dict[str, object]], problem: str) -> None:
    [found] = rules.level_problems(raw)
    assert problem in found


def test_window() -> None:
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    end = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert rules.in_window(start, start, end)
    assert not rules.in_window(end, start, end)
    assert rules.in_window(end, None, None)


def test_rank_shares_ties() -> None:
    ranked = rules.rank(
        [("a", Decimal(9)), ("b", Decimal(5)), ("c", Decimal(5)), ("d", Decimal(1))]
    )
    assert [(r, n) for r, n, _ in ranked] == [(1, "a"), (2, "b"), (2, "c"), (4, "d")]
