"""The analytics' pure rules: stages, RFM scores and segments, the churn warning, rates,
confidence intervals, NPS, and the campaign holdout's assignment."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from loyalty.analytics import rules
from loyalty.earning.rules import in_holdout

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
THRESHOLDS = {"new_days": 30, "active_days": 90, "silent_days": 180}


@pytest.mark.parametrize(
    ("enrolled_days", "last_active_days", "stage"),
    [
        (5, None, "new"),
        (5, 1, "new"),
        (100, 10, "active"),
        (100, 90, "active"),
        (100, 91, "silent"),
        (400, 180, "silent"),
        (400, 181, "churned"),
        (60, None, "silent"),
        (200, None, "churned"),
    ],
)
def test_lifecycle_stages(enrolled_days: int, last_active_days: int | None, stage: str) -> None:
    enrolled = NOW - dt.timedelta(days=enrolled_days)
    last = None if last_active_days is None else NOW - dt.timedelta(days=last_active_days)
    assert (
        rules.lifecycle_stage(enrolled_at=enrolled, last_active_at=last, now=NOW, **THRESHOLDS)
        == stage
    )


def test_the_managers_thresholds_decide_the_stage() -> None:
    enrolled = NOW - dt.timedelta(days=100)
    last = NOW - dt.timedelta(days=40)
    assert (
        rules.lifecycle_stage(
            enrolled_at=enrolled,
            last_active_at=last,
            now=NOW,
            new_days=7,
            active_days=30,
            silent_days=60,
        )
        == "silent"
    )


def test_quintile_scores_give_ties_the_higher_quintile() -> None:
    bounds = [1, 2, 4, 4, 9]  # the lowest value of each quintile
    assert [rules.score(v, bounds) for v in (0, 1, 2, 3, 4, 8, 9, 100)] == [1, 1, 2, 2, 4, 4, 5, 5]
    # Fewer buyers than quintiles: the scores are the top ones.
    assert rules.score(7, [7]) == 5
    assert rules.score(3, []) == 1


@pytest.mark.parametrize(
    ("r", "f", "m", "segment"),
    [
        (5, 5, 5, "champions"),
        (5, 4, 3, "champions"),  # fm = ceil(3.5) = 4
        (3, 5, 4, "loyal"),
        (4, 2, 2, "potential_loyalist"),
        (5, 1, 1, "new_customer"),
        (4, 1, 1, "promising"),
        (3, 3, 3, "need_attention"),
        (3, 1, 2, "about_to_sleep"),
        (2, 5, 5, "cannot_lose"),
        (1, 3, 4, "at_risk"),
        (2, 1, 2, "hibernating"),
        (1, 1, 1, "lost"),
    ],
)
def test_rfm_segments(r: int, f: int, m: int, segment: str) -> None:
    assert rules.segment(r, f, m) == segment


def test_the_churn_warning() -> None:
    # Baseline 6 over 90 days = 2 per 30 days; a 30% drop leaves 1.4: 1 is at risk, 2 is not.
    assert rules.risk(recent=1, baseline_total=6, stage="active", drop_pct=30) == rules.Risk(
        "activity_drop", 1, rules.Decimal("2.00")
    )
    assert rules.risk(recent=2, baseline_total=6, stage="active", drop_pct=30) is None
    # Exactly 30% down counts: 3 per 30 days before, 2.1 now is impossible, 2 is below.
    assert rules.risk(recent=7, baseline_total=30, stage="active", drop_pct=30) is not None
    # No baseline, no drop; silent members are at risk whatever their baseline.
    assert rules.risk(recent=0, baseline_total=0, stage="active", drop_pct=30) is None
    assert rules.risk(recent=0, baseline_total=0, stage="silent", drop_pct=30).reason == "silent"  # type: ignore[union-attr]


def test_rates_are_null_without_a_denominator() -> None:
    assert rules.rate(0, 0) is None
    assert rules.rate(0, 5) == 0.0
    assert rules.rate(2, 3) == 0.6667


def test_confidence_intervals_by_hand() -> None:
    # 30/100 against 20/100: 0.1 +- 1.96 * sqrt(0.3*0.7/100 + 0.2*0.8/100) = 0.1 +- 0.1192
    diff, low, high = rules.proportion_difference(30, 100, 20, 100)  # type: ignore[misc]
    half = rules.Z_95 * math.sqrt(0.21 / 100 + 0.16 / 100)
    assert (diff, low, high) == (0.1, round(0.1 - half, 4), round(0.1 + half, 4))
    assert rules.proportion_difference(1, 0, 1, 2) is None
    # Means of [1, 3] and [0, 0, 0]: 2 - 0, Welch variance 2/2 + 0 = 1, so 2 +- 1.96
    diff, low, high = rules.mean_difference((2, 4.0, 10.0), (3, 0.0, 0.0))  # type: ignore[misc]
    assert (diff, low, high) == (2.0, round(2 - rules.Z_95, 4), round(2 + rules.Z_95, 4))


def test_nps() -> None:
    assert rules.nps(promoters=2, detractors=1, responses=3) == 33.3
    assert rules.nps(promoters=0, detractors=0, responses=0) is None


def test_months() -> None:
    assert rules.add_months(dt.date(2026, 11, 1), 3) == dt.date(2027, 2, 1)
    assert rules.months_between(dt.date(2024, 2, 29), dt.date(2025, 2, 28)) == 12


@pytest.mark.parametrize("share", [10, 1])
def test_the_holdout_is_stable_and_close_to_its_share(share: int) -> None:
    members = [f"mem_{index:06d}" for index in range(10_000)]
    held = [m for m in members if in_holdout("cmp_spring", m, share)]
    assert held == [m for m in members if in_holdout("cmp_spring", m, share)]
    # Binomial(10000, p): three standard deviations either way.
    sd = math.sqrt(10_000 * share / 100 * (1 - share / 100))
    assert abs(len(held) - 100 * share) < 3 * sd
    # Another campaign holds out other members; no share holds out nobody.
    assert held != [m for m in members if in_holdout("cmp_summer", m, share)]
    assert not any(in_holdout("cmp_spring", m, 0) for m in members)
