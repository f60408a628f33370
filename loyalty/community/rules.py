"""Pure community rules: event properties, points for an event, caps, streaks and badge
levels. No database, no Flask."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

PROPERTY_TYPES = ("string", "integer", "number", "boolean")
NUMERIC_TYPES = ("integer", "number")
CAP_PERIODS = ("day", "month")
BADGE_RULES = (
    "event_count",
    "streak",
    "spend",
    "orders",
    "referrals",
    "property_sum",
)
# Rules that count events of one type (and so name it).
EVENT_RULES = ("event_count", "property_sum")
CHECK_IN = "check_in"
# Types every programme knows without declaring them, and their properties. An NPS answer
# (``nps.responded``, score 0 to 10) feeds the analytics' net promoter score.
BUILT_IN_TYPES: dict[str, dict[str, dict[str, Any]]] = {
    CHECK_IN: {},
    "nps.responded": {
        "score": {"type": "integer", "required": True, "minimum": 0, "maximum": 10},
        "comment": {"type": "string", "required": False},
    },
}
TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_STRING = 500
# Numeric properties stay far inside what points and sums can hold (10^12 kg of CO2 is plenty).
MAX_NUMBER = 10**12
# No single event earns more than this (as no single order does).
MAX_EVENT_POINTS = 10**9
# An event may be reported this far ahead of the server's clock (clock skew), no further.
MAX_GRACE_DAYS = 7


def property_problems(
    definitions: dict[str, dict[str, Any]], properties: dict[str, Any]
) -> list[tuple[str, str]]:
    """What is wrong with an event's ``properties`` against its type's ``definitions``
    (name -> {type, required}), as (name, detail) pairs: missing required ones, unknown
    ones, and values of the wrong type (booleans are not numbers; integers are numbers)."""
    problems = []
    for name, definition in sorted(definitions.items()):
        if definition.get("required") and properties.get(name) is None:
            problems.append((name, "Missing required property."))
    for name, value in sorted(properties.items()):
        known = definitions.get(name)
        if known is None:
            problems.append((name, "Unknown property for this event type."))
            continue
        if value is None:
            continue
        detail = _type_problem(known["type"], value) or _range_problem(known, value)
        if detail:
            problems.append((name, detail))
    return problems


def _range_problem(definition: dict[str, Any], value: Any) -> str | None:
    """A number outside a built-in type's ``minimum``-``maximum`` range."""
    low, high = definition.get("minimum"), definition.get("maximum")
    if low is not None and high is not None and not low <= value <= high:
        return f"Must be between {low} and {high}."
    return None


def _type_problem(kind: str, value: Any) -> str | None:
    if kind == "string":
        if not isinstance(value, str):
            return "Must be a string."
        if len(value) > MAX_STRING:
            return f"Must be at most {MAX_STRING} characters."
        return None
    if kind == "boolean":
        return None if isinstance(value, bool) else "Must be a boolean."
    if isinstance(value, bool):
        return f"Must be {'an integer' if kind == 'integer' else 'a number'}."
    if kind == "integer" and not isinstance(value, int):
        return "Must be an integer."
    if not isinstance(value, int | float) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        return "Must be a number."
    if abs(value) > MAX_NUMBER:
        return f"Must be between -{MAX_NUMBER} and {MAX_NUMBER}."
    return None


def numeric(value: Any) -> Decimal:
    """A property's value as a number (0 when absent or not numeric)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Decimal(0)
    return Decimal(str(value))


@dataclass(frozen=True)
class EventRuleTerms:
    """Points for one event: ``points`` plus ``points_per_unit`` times the value of the
    numeric ``per_unit_property`` (rounded down), at most ``cap`` rewarded events per member
    per ``cap_period`` (the member's local day or month)."""

    points: int = 0
    per_unit_property: str | None = None
    points_per_unit: Decimal | None = None
    cap: int | None = None
    cap_period: str | None = None


def event_points(terms: EventRuleTerms, properties: dict[str, Any], rewarded_in_period: int) -> int:
    """Points an event earns under ``terms``, given how many events of its type already
    earned points in the member's cap period; 0 once the cap is reached."""
    if terms.cap is not None and rewarded_in_period >= terms.cap:
        return 0
    points = Decimal(terms.points)
    if terms.per_unit_property and terms.points_per_unit:
        points += terms.points_per_unit * numeric(properties.get(terms.per_unit_property))
    return min(max(int(points.to_integral_value(rounding="ROUND_FLOOR")), 0), MAX_EVENT_POINTS)


def local_date(moment: dt.datetime, timezone: str) -> dt.date:
    """The date in ``timezone`` at ``moment`` (UTC when the zone is unknown)."""
    try:
        zone = ZoneInfo(timezone)
    except (ValueError, KeyError, OSError):
        zone = ZoneInfo("UTC")
    return moment.astimezone(zone).date()


def cap_period_bounds(day: dt.date, period: str) -> tuple[dt.date, dt.date]:
    """The local dates ``[start, end)`` of the cap period containing ``day``."""
    if period == "day":
        return day, day + dt.timedelta(days=1)
    start = day.replace(day=1)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


@dataclass(frozen=True)
class Streak:
    """A member's run of daily check-ins: ``current`` days (as of ``last_date``) and the
    ``longest`` ever."""

    current: int = 0
    longest: int = 0
    last_date: dt.date | None = None


def advance_streak(streak: Streak, day: dt.date, grace_days: int) -> tuple[Streak, bool]:
    """The streak after a check-in on local date ``day``, and whether the check-in counted.

    Several check-ins on one local day count once; a check-in dated before the last counted
    day (reported late) does not change the streak. Up to ``grace_days`` missed days in a row
    keep the streak going (missed days are not counted in it); more start a new streak at 1.
    """
    last = streak.last_date
    if last is not None and day <= last:
        return streak, False
    if last is not None and (day - last).days - 1 <= grace_days:
        current = streak.current + 1
    else:
        current = 1
    return Streak(current, max(streak.longest, current), day), True


def streak_as_of(streak: Streak, today: dt.date, grace_days: int) -> int:
    """The current streak as seen on local date ``today``: 0 once more than ``grace_days``
    days have been missed since the last check-in."""
    if streak.last_date is None:
        return 0
    missed = (today - streak.last_date).days - 1
    return streak.current if missed <= grace_days else 0


def streak_of(days: list[dt.date], grace_days: int) -> Streak:
    """The streak that check-ins on ``days`` (in the order reported) build."""
    streak = Streak()
    for day in days:
        streak, _ = advance_streak(streak, day, grace_days)
    return streak


@dataclass(frozen=True)
class Level:
    """A level of a badge: reached when the badge's metric reaches ``threshold``."""

    number: int  # 1-based
    name: str
    threshold: Decimal
    bonus_points: int = 0


def plain(value: Decimal) -> Decimal:
    """``value`` without trailing zeros or an exponent (100, 2.5)."""
    return Decimal(format(value.normalize(), "f"))


def stored_levels(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Levels as stored (JSON): thresholds as plain decimal strings, bonus points as ints."""
    return [
        {
            "name": str(level["name"]),
            "threshold": str(plain(Decimal(str(level["threshold"])))),
            "bonus_points": int(level.get("bonus_points") or 0),
        }
        for level in raw
    ]


def levels_of(raw: Sequence[dict[str, Any]]) -> list[Level]:
    return [
        Level(
            i, str(level["name"]), Decimal(str(level["threshold"])), level.get("bonus_points") or 0
        )
        for i, level in enumerate(raw, start=1)
    ]


def level_problems(raw: list[dict[str, Any]]) -> list[str]:
    """What is wrong with a badge's levels: none, or thresholds not strictly increasing."""
    if not raw:
        return ["A badge needs at least one level."]
    thresholds = [Decimal(str(level["threshold"])) for level in raw]
    if any(b <= a for a, b in zip(thresholds, thresholds[1:], strict=False)):
        return ["Level thresholds must strictly increase."]
    if len({level["name"] for level in raw}) != len(raw):
        return ["Level names must differ."]
    return []


def levels_reached(levels: list[Level], value: Decimal) -> list[Level]:
    """The levels whose threshold ``value`` reaches."""
    return [level for level in levels if value >= level.threshold]


@dataclass(frozen=True)
class Progress:
    """Where a member stands on a badge: the metric, the highest level reached (0: none), and
    the next level with what is left to reach it (None at the top)."""

    value: Decimal
    level: int
    next_level: Level | None
    remaining: Decimal | None


def progress(levels: list[Level], value: Decimal) -> Progress:
    reached = levels_reached(levels, value)
    upcoming = [level for level in levels if value < level.threshold]
    nxt = upcoming[0] if upcoming else None
    return Progress(
        value=value,
        level=reached[-1].number if reached else 0,
        next_level=nxt,
        remaining=(nxt.threshold - value) if nxt else None,
    )


def in_window(
    moment: dt.datetime, starts_at: dt.datetime | None, ends_at: dt.datetime | None
) -> bool:
    """Whether ``moment`` is inside ``[starts_at, ends_at)`` (open ends: unbounded)."""
    return (starts_at is None or moment >= starts_at) and (ends_at is None or moment < ends_at)


def rank(values: list[tuple[str, Decimal]]) -> list[tuple[int, str, Decimal]]:
    """Competition ranking ("1, 2, 2, 4") of (name, value) pairs already sorted by value,
    highest first."""
    ranked = []
    previous: Decimal | None = None
    position = 0
    for index, (name, value) in enumerate(values, start=1):
        if value != previous:
            position, previous = index, value
        ranked.append((position, name, value))
    return ranked
