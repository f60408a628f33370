"""Pure rules of the analytics: lifecycle stages, RFM scores and segments, the churn warning,
retention marks, confidence intervals. No database, no Flask.

Vocabulary (README, "Analytics", has the full definitions):

- *activity*: an order that was not refunded in full, a redemption of points, or an
  engagement event (`POST /v1/events`, check-ins included);
- a member's *day n* is the n-th local day after the day they joined, in their time zone
  (day 0 is the day of enrolment);
- *retention at a mark* is the share of a cohort active in the days since the previous mark:
  day 1 (day 1), day 7 (days 2-7), day 30 (8-30), day 90 (31-90), year 1 (91-365),
  year 3 (366-1095), year 5 (1096-1825). A member counts once the mark's last day is over.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# (name, first day, last day) of each retention mark.
MARKS: tuple[tuple[str, int, int], ...] = (
    ("day_1", 1, 1),
    ("day_7", 2, 7),
    ("day_30", 8, 30),
    ("day_90", 31, 90),
    ("year_1", 91, 365),
    ("year_3", 366, 1095),
    ("year_5", 1096, 1825),
)
MARK_NAMES = tuple(name for name, _, _ in MARKS)

SEGMENTS = (
    "champions",
    "loyal",
    "potential_loyalist",
    "new_customer",
    "promising",
    "need_attention",
    "about_to_sleep",
    "cannot_lose",
    "at_risk",
    "hibernating",
    "lost",
)
RISK_REASONS = ("activity_drop", "silent")
FLAG_OUTCOMES = ("won_back", "returned", "churned")
ALERT_KINDS = ("week", "month")
# The churn warning compares the last 30 days with the 90 days before, per 30 days.
RECENT_DAYS = 30
BASELINE_DAYS = 90
# An at-risk member active again within this many days of the flag was won back.
WIN_BACK_DAYS = 30
# The headline: 30-day retention of the members who joined in these many days, from
# 60 to 30 days ago (all of them past their day 30).
HEADLINE_DAYS = 30
NPS_MIN, NPS_MAX = 0, 10
NPS_EVENT = "nps.responded"
Z_95 = 1.959963984540054


def lifecycle_stage(
    *,
    enrolled_at: dt.datetime,
    last_active_at: dt.datetime | None,
    now: dt.datetime,
    new_days: int,
    active_days: int,
    silent_days: int,
) -> str:
    """``new`` for ``new_days`` after enrolment; then ``active`` with activity in the last
    ``active_days``, ``silent`` when the last activity (or, with none, the enrolment) is up
    to ``silent_days`` old, ``churned`` beyond."""
    if now - enrolled_at < dt.timedelta(days=new_days):
        return "new"
    since = now - (last_active_at or enrolled_at)
    if last_active_at is not None and since <= dt.timedelta(days=active_days):
        return "active"
    if since <= dt.timedelta(days=silent_days):
        return "silent"
    return "churned"


def score(value: Any, lower_bounds: Sequence[Any]) -> int:
    """The quintile score 1-5 of ``value``: the highest quintile whose lowest value it reaches
    (``lower_bounds`` ascending, one per quintile; ties share the higher score)."""
    if not lower_bounds:
        return 1
    position = bisect.bisect_right(list(lower_bounds), value)
    return max(1, min(5, position + (5 - len(lower_bounds))))


def segment(recency: int, frequency: int, monetary: int) -> str:
    """The named segment of an RFM score, on the usual recency x frequency-and-money grid
    (``fm``: the mean of F and M, rounded up)."""
    fm = math.ceil((frequency + monetary) / 2)
    if recency >= 5 and fm >= 4:
        return "champions"
    if recency >= 3 and fm >= 4:
        return "loyal"
    if recency >= 4 and fm >= 2:
        return "potential_loyalist"
    if recency >= 5:
        return "new_customer"
    if recency == 4:
        return "promising"
    if recency == 3 and fm == 3:
        return "need_attention"
    if recency == 3:
        return "about_to_sleep"
    if fm >= 5:
        return "cannot_lose"
    if fm >= 3:
        return "at_risk"
    if recency == 2:
        return "hibernating"
    return "lost"


@dataclass(frozen=True)
class Risk:
    reason: str
    recent: int
    baseline: Decimal


def risk(*, recent: int, baseline_total: int, stage: str, drop_pct: int) -> Risk | None:
    """Whether a member is at risk: silent, or activity over the last 30 days down by
    ``drop_pct`` percent or more against the 90 days before (per 30 days). A member with no
    baseline activity cannot fall."""
    baseline = Decimal(baseline_total) * RECENT_DAYS / BASELINE_DAYS
    if baseline_total > 0 and Decimal(recent) <= baseline * (100 - drop_pct) / 100:
        return Risk("activity_drop", recent, baseline.quantize(Decimal("0.01")))
    if stage == "silent":
        return Risk("silent", recent, baseline.quantize(Decimal("0.01")))
    return None


def rate(part: int, whole: int) -> float | None:
    """``part / whole`` rounded to 4 places; None when ``whole`` is 0 (not 0%)."""
    return None if whole == 0 else round(part / whole, 4)


def proportion_difference(
    treated: int, treated_n: int, control: int, control_n: int
) -> tuple[float, float, float] | None:
    """The difference of two proportions and its 95% confidence interval (normal
    approximation); None when a group is empty."""
    if treated_n == 0 or control_n == 0:
        return None
    p1, p2 = treated / treated_n, control / control_n
    half = Z_95 * math.sqrt(p1 * (1 - p1) / treated_n + p2 * (1 - p2) / control_n)
    diff = p1 - p2
    return round(diff, 4), round(diff - half, 4), round(diff + half, 4)


def mean_difference(
    treated: tuple[int, float, float], control: tuple[int, float, float]
) -> tuple[float, float, float] | None:
    """The difference of two means and its 95% confidence interval (Welch), from each
    group's (count, sum, sum of squares); None when a group is empty."""
    (n1, s1, q1), (n2, s2, q2) = treated, control
    if n1 == 0 or n2 == 0:
        return None
    m1, m2 = s1 / n1, s2 / n2
    v1 = max(q1 / n1 - m1 * m1, 0.0) * (n1 / (n1 - 1) if n1 > 1 else 0.0)
    v2 = max(q2 / n2 - m2 * m2, 0.0) * (n2 / (n2 - 1) if n2 > 1 else 0.0)
    half = Z_95 * math.sqrt(v1 / n1 + v2 / n2)
    diff = m1 - m2
    return round(diff, 4), round(diff - half, 4), round(diff + half, 4)


def nps(promoters: int, detractors: int, responses: int) -> float | None:
    """Net promoter score, -100 to 100: percent promoters (9-10) less percent detractors
    (0-6); None without responses."""
    if responses == 0:
        return None
    return round(100 * (promoters - detractors) / responses, 1)


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def months_between(first: dt.date, second: dt.date) -> int:
    """Whole calendar months from ``first``'s month to ``second``'s."""
    return (second.year - first.year) * 12 + second.month - first.month
