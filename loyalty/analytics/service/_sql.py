"""What every analytics query shares: local dates on PostgreSQL and SQLite, the period a
request names, and the union of members' activity (orders, redemptions, engagement events)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Date,
    Float,
    Integer,
    Select,
    Subquery,
    cast,
    distinct,
    func,
    literal,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.community import reporting as community
from loyalty.ledger import reporting as ledger
from loyalty.ledger import service as ledger_service
from loyalty.tiers import service as tiers_service


@cache
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def _sqlite_local_date(moment: str | None, zone: str | None) -> str | None:
    """SQLite's stand-in for PostgreSQL's ``(moment AT TIME ZONE zone)::date``."""
    if moment is None:
        return None
    parsed = dt.datetime.fromisoformat(str(moment)).replace(tzinfo=dt.UTC)
    return parsed.astimezone(_zone(zone or "UTC")).date().isoformat()


class Dialect:
    """The SQL that differs between PostgreSQL and SQLite."""

    def __init__(self, session: Session) -> None:
        self.name = session.get_bind().dialect.name
        if self.name == "sqlite":
            raw = session.connection().connection.driver_connection
            assert raw is not None
            raw.create_function("loyalty_local_date", 2, _sqlite_local_date, deterministic=True)

    @property
    def postgresql(self) -> bool:
        return self.name == "postgresql"

    def local_date(self, moment: Any, zone: Any) -> ColumnElement[Any]:
        """The calendar date of a UTC timestamp in a time zone."""
        if self.postgresql:
            return cast(func.timezone(zone, moment), Date)
        return func.loyalty_local_date(moment, zone)

    def days_between(self, earlier: Any, later: Any) -> ColumnElement[int]:
        """Whole days from the date ``earlier`` to the date ``later``."""
        if self.postgresql:
            result: ColumnElement[int] = later - earlier
            return result
        return cast(func.julianday(later) - func.julianday(earlier), Integer)

    def month_number(self, day: Any) -> ColumnElement[int]:
        """year * 12 + month of a date: months apart are differences of these."""
        if self.postgresql:
            return cast(func.extract("year", day) * 12 + func.extract("month", day), Integer)
        return cast(func.strftime("%Y", day), Integer) * 12 + cast(
            func.strftime("%m", day), Integer
        )

    def union_of_bits(self, bit: Any) -> ColumnElement[Any]:
        """The aggregate OR of ``bit`` (each value a power of two, or 0): PostgreSQL's
        ``bit_or``, which needs no sort of each group's values; on SQLite, which has no
        ``bit_or``, the sum of the distinct values."""
        if self.postgresql:
            return func.bit_or(bit)
        return func.sum(distinct(bit))

    def plus_days(self, moment: Any, days: int) -> ColumnElement[Any]:
        """A timestamp ``days`` later."""
        if self.postgresql:
            result: ColumnElement[Any] = moment + literal_column(f"interval '{int(days)} days'")
            return result
        return func.strftime("%Y-%m-%d %H:%M:%f", moment, f"{days:+d} days")

    def date_value(self, value: Any) -> dt.date | None:
        """A date as the database returned it (SQLite: ISO text)."""
        if value is None or isinstance(value, dt.date):
            return value
        return dt.date.fromisoformat(str(value)[:10])

    def as_date(self, day: dt.date) -> Any:
        """A date parameter comparable with `local_date` results."""
        return literal(day, Date) if self.postgresql else literal(day.isoformat())

    def seconds_between(self, earlier: Any, later: Any) -> ColumnElement[float]:
        if self.postgresql:
            return cast(func.extract("epoch", later - earlier), Float)
        return (func.julianday(later) - func.julianday(earlier)) * 86400


@dataclass(frozen=True)
class Period:
    """The days ``first`` to ``last`` (inclusive) in the programme's time zone, and the UTC
    moments they span: ``[start, end)``."""

    first: dt.date
    last: dt.date
    start: dt.datetime
    end: dt.datetime
    timezone: str


def programme_zone(session: Session) -> str:
    return str(ledger_service.get_settings(session).timezone or "UTC")


def today(session: Session, now: dt.datetime | None = None) -> dt.date:
    """Today in the programme's time zone."""
    return (now or clock.now()).astimezone(_zone(programme_zone(session))).date()


def period(
    session: Session,
    first: dt.date | None,
    last: dt.date | None,
    *,
    default_days: int = 30,
) -> Period:
    """The period a request names: ``first`` to ``last`` inclusive (default the last
    ``default_days`` days to today), in the programme's time zone."""
    zone_name = programme_zone(session)
    zone = _zone(zone_name)
    last = last or clock.now().astimezone(zone).date()
    first = first or last - dt.timedelta(days=default_days - 1)
    start = dt.datetime.combine(first, dt.time(), zone).astimezone(dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), zone).astimezone(dt.UTC)
    return Period(first=first, last=last, start=start, end=end, timezone=zone_name)


def activity_sources() -> tuple[tuple[Select[Any], str, str], ...]:
    """What counts as a member's activity, once for `activity` and `moments`: each source's
    rows (``member_id`` and a time), the name of that time, its kind. Orders refunded in
    full are not activity."""
    return (
        (ledger.counted_orders(), "placed_at", "order"),
        (ledger.redemptions(), "created_at", "redemption"),
        (community.events(), "occurred_at", "event"),
    )


@cache
def activity() -> Subquery:
    """Every activity: ``member_id``, ``at``, ``kind`` (``order``, ``redemption``,
    ``event``). Built once (a campaign that targets stages asks for a member's last activity
    on every order; the statement is immutable)."""
    parts = []
    for rows, moment, kind in activity_sources():
        source = rows.subquery()
        parts.append(
            select(source.c.member_id, source.c[moment].label("at"), literal(kind).label("kind"))
        )
    return union_all(*parts).subquery("activity")


@cache
def moments() -> Subquery:
    """When each member was active: ``member_id``, ``at`` (what `activity` holds, without
    its kind, and each source's rows read directly: a short statement, as the accrual's
    wallet lock carries it)."""
    return union_all(
        *(
            rows.with_only_columns(
                rows.selected_columns.member_id, rows.selected_columns[moment].label("at")
            )
            for rows, moment, _kind in activity_sources()
        )
    ).subquery("moments")


def base_tier(session: Session) -> str | None:
    """The tier members hold before the tiers have seen them: the lowest, when its threshold
    is 0."""
    ladder = tiers_service.list_tiers(session)
    return ladder[0].code if ladder and ladder[0].threshold == 0 else None
