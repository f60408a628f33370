"""Pure rules of the tier ladder: which tier a metric value qualifies for, qualification
windows, review dates, what a review decides, and progress to the next tier. No database, no
Flask.

Vocabulary:

- the *metric* is what qualifies (points earned, money spent in major units, or orders);
- the *window* is the span it is measured over as of a moment: all time (``lifetime``), the
  twelve months before (``rolling_12_months``), or the calendar year so far (``calendar_year``);
- a computed tier is held for *qualification periods*: a period starts when the tier is reached
  (or renewed) and ends at the end of that calendar year (``calendar_year``) or twelve months
  later (``rolling_12_months``); ``lifetime`` periods never end;
- the *review* of a period happens ``grace_days`` after its end.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from dateutil.relativedelta import relativedelta

METRICS = ("points", "spend", "orders")
WINDOWS = ("lifetime", "rolling_12_months", "calendar_year")
DOWNGRADE_MODES = ("one_step", "recompute")
CHANGE_KINDS = (
    "upgrade",
    "downgrade",
    "renewal",
    "manual",
    "manual_ended",
    "paid",
    "paid_ended",
)
CODE_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
# A review late by more periods than this is caught up in one go (see `next_review`).
MAX_CATCH_UP_PERIODS = 200


def is_code(value: str) -> bool:
    """Tier codes are slugs: lower-case letters and digits in words joined by hyphens."""
    return len(value) <= 32 and re.fullmatch(CODE_PATTERN, value) is not None


@dataclass(frozen=True)
class Rung:
    """A tier as the rules see it."""

    code: str
    name: str
    rank: int
    threshold: int
    retain_threshold: int | None = None

    @property
    def keep_at(self) -> int:
        """The metric value that keeps the tier at review (its threshold when no retain
        threshold is set)."""
        return self.threshold if self.retain_threshold is None else self.retain_threshold


def sort_ladder(ladder: Sequence[Rung]) -> list[Rung]:
    return sorted(ladder, key=lambda rung: rung.rank)


def ladder_problem(ladder: Sequence[Rung]) -> str | None:
    """Why this ladder is not acceptable, or None: thresholds must rise strictly with rank
    and a retain threshold may not exceed its tier's threshold."""
    rungs = sort_ladder(ladder)
    for rung in rungs:
        if rung.threshold < 0 or (rung.retain_threshold or 0) < 0:
            return f"Tier {rung.code!r}: thresholds cannot be negative."
        if rung.retain_threshold is not None and rung.retain_threshold > rung.threshold:
            return (
                f"Tier {rung.code!r}: retain_threshold {rung.retain_threshold} is above its "
                f"threshold {rung.threshold}."
            )
    for lower, higher in zip(rungs, rungs[1:], strict=False):
        if higher.threshold <= lower.threshold:
            return (
                f"Thresholds must rise with rank: {higher.code!r} (rank {higher.rank}) needs a "
                f"threshold above {lower.threshold}, the threshold of {lower.code!r} "
                f"(rank {lower.rank})."
            )
    return None


def qualified_tier(ladder: Sequence[Rung], value: int) -> Rung | None:
    """The highest tier whose threshold ``value`` reaches, or None below the lowest."""
    result = None
    for rung in sort_ladder(ladder):
        if value >= rung.threshold:
            result = rung
    return result


def base_tier(ladder: Sequence[Rung]) -> Rung | None:
    """The tier every member holds without any activity: the lowest, when its threshold is 0."""
    rungs = sort_ladder(ladder)
    return rungs[0] if rungs and rungs[0].threshold == 0 else None


def rung(ladder: Sequence[Rung], code: str | None) -> Rung | None:
    return next((r for r in ladder if r.code == code), None) if code else None


def rank_of(tier: Rung | None) -> int | None:
    return tier.rank if tier else None


def is_higher(candidate: Rung | None, current: Rung | None) -> bool:
    """Whether ``candidate`` is above ``current`` (any tier is above no tier)."""
    if candidate is None:
        return False
    return current is None or candidate.rank > current.rank


# --- windows and periods -------------------------------------------------------------------


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC)


def _year_start(year: int) -> dt.datetime:
    return dt.datetime(year, 1, 1, tzinfo=dt.UTC)


def window_start(window: str, at: dt.datetime) -> dt.datetime | None:
    """Where the window measured as of ``at`` starts (None: the beginning of time). The
    window ends at ``at`` itself."""
    at = _utc(at)
    if window == "lifetime":
        return None
    if window == "rolling_12_months":
        return at - relativedelta(months=12)
    if window == "calendar_year":
        return _year_start(at.year)
    raise ValueError(f"unknown window {window!r}")


def window_ending(window: str, end: dt.datetime) -> dt.datetime | None:
    """Where the window that ends at ``end`` (exclusive) starts: the calendar year that ends
    there (for a period ending 1 January), or the twelve months before ``end``."""
    end = _utc(end)
    if window == "calendar_year":
        return _year_start((end - dt.timedelta(microseconds=1)).year)
    return window_start(window, end)


def window_deadline(window: str, at: dt.datetime) -> dt.date | None:
    """The last day that counts towards the window running at ``at``, when the window has a
    fixed end (the calendar year's 31 December); None for lifetime and rolling windows."""
    if window == "calendar_year":
        return dt.date(_utc(at).year, 12, 31)
    return None


def period_end(window: str, since: dt.datetime) -> dt.datetime | None:
    """The end (exclusive) of the qualification period that starts at ``since``: the next
    1 January 00:00 UTC for ``calendar_year``, twelve months later for ``rolling_12_months``,
    never (None) for ``lifetime``."""
    since = _utc(since)
    if window == "lifetime":
        return None
    if window == "rolling_12_months":
        return since + relativedelta(months=12)
    if window == "calendar_year":
        return _year_start(since.year + 1)
    raise ValueError(f"unknown window {window!r}")


def review_date(
    window: str, since: dt.datetime | None, grace_days: int, tier: Rung | None
) -> dt.datetime | None:
    """When a computed tier held since ``since`` is reviewed: ``grace_days`` after the end of
    its period. None when it never is: no tier, a lifetime window, or a tier kept with a
    metric of 0 (nobody can fall below it)."""
    if tier is None or since is None or tier.keep_at <= 0:
        return None
    end = period_end(window, since)
    return None if end is None else end + dt.timedelta(days=grace_days)


def next_review(
    window: str, since: dt.datetime | None, grace_days: int, tier: Rung | None, now: dt.datetime
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``(since, review_at)`` for a member re-evaluated after the policy changed: the review
    date of the period that starts at ``since``, or, when that date has already passed under
    the new policy, of the first later period whose review is still ahead (the periods in
    between count as renewed: a policy change never downgrades anyone before a review they
    could have prepared for)."""
    review = review_date(window, since, grace_days, tier)
    periods = 0
    while review is not None and review <= now and periods < MAX_CATCH_UP_PERIODS:
        since = period_end(window, since)  # type: ignore[arg-type]
        review = review_date(window, since, grace_days, tier)
        periods += 1
    return since, review


# --- reviews -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a review decides: ``renewal`` (keep the tier for another period), ``downgrade``
    (to ``tier``, None meaning no tier) or ``upgrade`` (the value reached a higher tier)."""

    kind: str
    tier: Rung | None


def step_below(ladder: Sequence[Rung], current: Rung) -> Rung | None:
    """The tier one rank below ``current`` on the ladder (None below the lowest)."""
    below = [r for r in sort_ladder(ladder) if r.rank < current.rank]
    return below[-1] if below else None


def review_outcome(ladder: Sequence[Rung], current: Rung, value: int, mode: str) -> Outcome:
    """Decide the review of ``current`` given the qualifying ``value`` (see the service for
    what is measured). The tier is renewed when ``value`` reaches its retain threshold (its
    threshold when none is set), or upgraded when it reaches a higher tier's threshold.
    Otherwise ``one_step`` goes down one rank (or to the tier ``value`` qualifies for when
    that is higher still) and ``recompute`` goes straight to the tier ``value`` qualifies for.
    """
    qualified = qualified_tier(ladder, value)
    if is_higher(qualified, current):
        return Outcome("upgrade", qualified)
    if value >= current.keep_at:
        return Outcome("renewal", current)
    if mode == "recompute":
        return Outcome("downgrade", qualified)
    if mode != "one_step":
        raise ValueError(f"unknown downgrade mode {mode!r}")
    below = step_below(ladder, current)
    target = qualified if is_higher(qualified, below) else below
    return Outcome("downgrade", target)


# --- progress ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """How far a member is from the next tier up."""

    next_tier: Rung
    metric: str
    current: int
    threshold: int
    remaining: int
    deadline: dt.date | None
    message: str


_UNITS = {"points": ("point", "points"), "orders": ("order", "orders")}


def progress_message(metric: str, remaining: int, tier_name: str, deadline: dt.date | None) -> str:
    """``"240 more points to Gold by 31 Dec 2026"``; spend reads ``"Spend 240 more to reach
    Gold ..."`` (major units of whatever currency)."""
    if metric == "spend":
        text = f"Spend {remaining} more to reach {tier_name}"
    else:
        singular, plural = _UNITS[metric]
        text = f"{remaining} more {singular if remaining == 1 else plural} to {tier_name}"
    if deadline is not None:
        text += f" by {deadline.day} {deadline.strftime('%b')} {deadline.year}"
    return text


def progress(
    ladder: Sequence[Rung],
    held: Rung | None,
    value: int,
    *,
    metric: str,
    window: str,
    now: dt.datetime,
) -> Progress | None:
    """Progress from the tier ``held`` (None: no tier) to the next one up, given the metric
    ``value`` in the window running now; None at the top of the ladder."""
    above = [r for r in sort_ladder(ladder) if held is None or r.rank > held.rank]
    if not above:
        return None
    target = above[0]
    remaining = max(target.threshold - value, 0)
    deadline = window_deadline(window, now)
    return Progress(
        next_tier=target,
        metric=metric,
        current=value,
        threshold=target.threshold,
        remaining=remaining,
        deadline=deadline,
        message=progress_message(metric, remaining, target.name, deadline),
    )
