"""Cohort retention: members grouped by the month they joined (or first ordered), the share
active at day 1, 7, 30, 90 and year 1, 3 and 5, and the monthly retention matrix."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, literal, select, union_all
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.analytics import rules
from loyalty.analytics.models import CohortActivity
from loyalty.analytics.service import activity as activity_service
from loyalty.analytics.service._sql import Dialect, activity, base_tier, period
from loyalty.auth import service as auth_service
from loyalty.ledger import reporting as ledger
from loyalty.members.models import Member
from loyalty.tiers import reporting as tiers_reporting

BASES = ("enrollment", "first_order")
ACQUISITIONS = ("referred", "direct")
MAX_MONTHS = 60


@dataclass
class Cohort:
    cohort: str
    members: int
    marks: list[dict[str, Any]] = field(default_factory=list)
    months: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Cohorts:
    basis: str
    first: dt.date
    last: dt.date
    headline: dict[str, Any]
    cohorts: list[Cohort]


def _members(
    session: Session,
    d: Dialect,
    *,
    basis: str,
    first: dt.date,
    last: dt.date,
    tier: str | None,
    acquisition: str | None,
    channel: str | None,
) -> Select[*tuple[Any, ...]]:
    """The members in the period with the local date they joined (``joined``) and their time
    zone, filtered."""
    if basis == "first_order":
        orders = ledger.counted_orders().subquery()
        firsts = (
            select(orders.c.member_id, func.min(orders.c.placed_at).label("at"))
            .group_by(orders.c.member_id)
            .subquery()
        )
        start: Any = firsts.c.at
        query: Select[*tuple[Any, ...]] = select(Member.id, Member.timezone).join(
            firsts, firsts.c.member_id == Member.id
        )
    else:
        start = Member.enrolled_at
        query = select(Member.id, Member.timezone)
    joined = d.local_date(start, Member.timezone)
    # Local dates are within a day of UTC ones: a coarse UTC range first, for the index.
    query = query.add_columns(joined.label("joined")).where(
        start >= dt.datetime.combine(first - dt.timedelta(days=1), dt.time(), dt.UTC),
        start < dt.datetime.combine(last + dt.timedelta(days=2), dt.time(), dt.UTC),
        joined >= d.as_date(first),
        joined <= d.as_date(last),
    )
    return _filtered(session, d, query, tier=tier, acquisition=acquisition, channel=channel)


def _filtered(
    session: Session,
    d: Dialect,
    query: Select[*tuple[Any, ...]],
    *,
    tier: str | None,
    acquisition: str | None,
    channel: str | None,
) -> Select[*tuple[Any, ...]]:
    """``query`` (of `Member` rows) with the cohort filters."""
    if acquisition == "referred":
        query = query.where(Member.referrer_id.is_not(None))
    elif acquisition == "direct":
        query = query.where(Member.referrer_id.is_(None))
    if channel is not None:
        clients = [c.id for c in auth_service.list_clients(session) if c.channel_id == channel]
        query = query.where(Member.enrolled_by.in_(clients or ["-"]))
    if tier is not None:
        query = query.where(_tier_at_joining(session, d) == tier)
    return query


def _tier_at_joining(session: Session, d: Dialect) -> ColumnElement[Any]:
    """The tier a member held at the end of their first day: the last tier change within 24
    hours of enrolment, else the base tier (a lowest tier with threshold 0), else none."""
    changes = tiers_reporting.changes().subquery()
    base = base_tier(session)
    first_day = (
        select(changes.c.to_code)
        .where(
            changes.c.member_id == Member.id,
            changes.c.at < d.plus_days(Member.enrolled_at, 1),
        )
        .order_by(changes.c.at.desc(), changes.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    return func.coalesce(first_day, literal(base))


def cohort_retention(
    session: Session,
    *,
    first: dt.date | None = None,
    last: dt.date | None = None,
    basis: str = "enrollment",
    tier: str | None = None,
    acquisition: str | None = None,
    channel: str | None = None,
    months: int = 12,
) -> Cohorts:
    """Retention by monthly cohort (members' local months) between ``first`` and ``last``
    (default: the last 12 months): the marks of `rules.MARKS` and ``months`` columns of the
    monthly matrix. A mark counts only members whose mark is over (``eligible``); a cohort with
    none is ``not_yet`` (rate null), not 0%. Reads only."""
    d = Dialect(session)
    span = period(session, first, last, default_days=365)
    first_day = span.first.replace(day=1) if first is None else span.first
    now = clock.now()
    filters = {"tier": tier, "acquisition": acquisition, "channel": channel}
    kept = activity_service.state(session, now)
    if kept is None:
        cohorts = _live(session, d, basis, first_day, span.last, filters, months, now)
    else:
        cohorts = _kept(session, d, basis, first_day, span.last, filters, months, now, kept.through)
    headline = retention_headline(session, now=now)
    return Cohorts(
        basis=basis,
        first=first_day,
        last=span.last,
        headline=headline,
        cohorts=list(cohorts.values()),
    )


def _live(
    session: Session,
    d: Dialect,
    basis: str,
    first: dt.date,
    last: dt.date,
    filters: dict[str, Any],
    months: int,
    now: dt.datetime,
) -> dict[str, Cohort]:
    """The cohorts from the source tables (the cohort activity is not built yet)."""
    members = _members(session, d, basis=basis, first=first, last=last, **filters).subquery(
        "cohort_members"
    )
    cohort_key = _month_key(d, members.c.joined)
    today = d.local_date(literal(now), members.c.timezone)
    age = d.days_between(members.c.joined, today)
    acts = activity()
    day = d.days_between(members.c.joined, d.local_date(acts.c.at, members.c.timezone))
    flags = (
        select(
            members.c.id,
            *[
                func.max(case((and_(day >= lo, day <= hi), 1), else_=0)).label(name)
                for name, lo, hi in rules.MARKS
            ],
        )
        .join(acts, acts.c.member_id == members.c.id)
        .where(acts.c.at < now)
        .group_by(members.c.id)
        .subquery("flags")
    )
    columns: list[Any] = [cohort_key.label("cohort"), func.count().label("members")]
    for name, _lo, hi in rules.MARKS:
        over = age > hi
        columns.append(func.sum(case((over, 1), else_=0)).label(f"{name}_eligible"))
        columns.append(
            func.sum(case((and_(over, flags.c[name] == 1), 1), else_=0)).label(f"{name}_retained")
        )
    rows = session.execute(
        select(*columns)
        .select_from(members.outerjoin(flags, flags.c.id == members.c.id))
        .group_by(cohort_key)
        .order_by(cohort_key)
    ).all()
    cohorts = _cohorts(rows)
    _matrix(session, d, members, cohorts, months, now)
    return cohorts


def _cohorts(rows: Any) -> dict[str, Cohort]:
    cohorts = {}
    for row in rows:
        mapping = row._mapping
        cohort = Cohort(cohort=mapping["cohort"], members=int(mapping["members"]))
        for name, lo, hi in rules.MARKS:
            eligible = int(mapping[f"{name}_eligible"] or 0)
            retained = int(mapping[f"{name}_retained"] or 0)
            cohort.marks.append(_mark(name, lo, hi, cohort.members, eligible, retained))
        cohorts[cohort.cohort] = cohort
    return cohorts


def _kept_members(
    session: Session,
    d: Dialect,
    basis: str,
    first: dt.date,
    last: dt.date,
    filters: dict[str, Any],
    through: dt.datetime,
) -> Select[*tuple[Any, ...]]:
    """The members in the period with their local joining day, filtered: by enrolment as
    `_members` has them; by first order from the kept rows, and for members whose first
    counted order came at or after ``through``, from the orders."""
    if basis != "first_order":
        return _members(session, d, basis=basis, first=first, last=last, **filters)
    kept = select(
        CohortActivity.member_id.label("id"), CohortActivity.joined_on.label("joined")
    ).where(
        CohortActivity.basis == "first_order",
        CohortActivity.joined_on >= d.as_date(first),
        CohortActivity.joined_on <= d.as_date(last),
    )
    orders = ledger.counted_orders().subquery()
    recent = (
        select(orders.c.member_id, func.min(orders.c.placed_at).label("at"))
        .where(orders.c.placed_at >= through)
        .group_by(orders.c.member_id)
        .subquery("recent_first_orders")
    )
    fresh = (
        select(Member.id.label("id"), d.local_date(recent.c.at, Member.timezone).label("joined"))
        .join(recent, recent.c.member_id == Member.id)
        .where(
            ~exists().where(
                CohortActivity.member_id == Member.id, CohortActivity.basis == "first_order"
            )
        )
    )
    picked = union_all(kept, fresh).subquery("picked")
    query = (
        select(Member.id, Member.timezone, picked.c.joined)
        .join(picked, picked.c.id == Member.id)
        .where(picked.c.joined >= d.as_date(first), picked.c.joined <= d.as_date(last))
    )
    return _filtered(session, d, query, **filters)


def _kept(
    session: Session,
    d: Dialect,
    basis: str,
    first: dt.date,
    last: dt.date,
    filters: dict[str, Any],
    months: int,
    now: dt.datetime,
    through: dt.datetime,
) -> dict[str, Cohort]:
    """The cohorts from the cohort activity (activity before ``through``) and the source
    tables for the activity since: one row per member, marks and months as bits."""
    members = _kept_members(session, d, basis, first, last, filters, through).subquery(
        "cohort_members"
    )
    tail = activity_service.bits(
        d, members.c.id, members.c.timezone, members.c.joined, start=through, until=now
    ).subquery("tail")
    marks = func.coalesce(CohortActivity.marks, 0).op("|")(func.coalesce(tail.c.marks, 0))
    active = func.coalesce(CohortActivity.months, 0).op("|")(func.coalesce(tail.c.months, 0))
    cohort_key = _month_key(d, members.c.joined)
    age = d.days_between(members.c.joined, d.local_date(literal(now), members.c.timezone))
    columns: list[Any] = [cohort_key.label("cohort"), func.count().label("members")]
    for index, (name, _lo, hi) in enumerate(rules.MARKS):
        over = age > hi
        hit = marks.op("&")(activity_service.mark_bit(index)) != 0
        columns.append(func.sum(case((over, 1), else_=0)).label(f"{name}_eligible"))
        columns.append(func.sum(case((and_(over, hit), 1), else_=0)).label(f"{name}_retained"))
    for index in range(months):
        hit = active.op("&")(activity_service.mark_bit(index)) != 0
        columns.append(func.sum(case((hit, 1), else_=0)).label(f"month_{index}"))
    rows = session.execute(
        select(*columns)
        .select_from(
            members.outerjoin(
                CohortActivity,
                and_(CohortActivity.member_id == members.c.id, CohortActivity.basis == basis),
            ).outerjoin(tail, tail.c.member_id == members.c.id)
        )
        .group_by(cohort_key)
        .order_by(cohort_key)
    ).all()
    cohorts = _cohorts(rows)
    counts = {
        (row._mapping["cohort"], index): int(row._mapping[f"month_{index}"] or 0)
        for row in rows
        for index in range(months)
    }
    _fill_months(cohorts, counts, months, now)
    return cohorts


def _mark(
    name: str, lo: int, hi: int, members: int, eligible: int, retained: int
) -> dict[str, Any]:
    status = "not_yet" if eligible == 0 else ("complete" if eligible == members else "partial")
    return {
        "mark": name,
        "days": [lo, hi],
        "eligible": eligible,
        "retained": retained,
        "rate": rules.rate(retained, eligible),
        "status": status,
    }


def _month_key(d: Dialect, day: Any) -> ColumnElement[str]:
    if d.postgresql:
        return func.to_char(day, "YYYY-MM")
    return func.strftime("%Y-%m", day)


def _matrix(
    session: Session,
    d: Dialect,
    members: Any,
    cohorts: dict[str, Cohort],
    months: int,
    now: dt.datetime,
) -> None:
    """Fill each cohort's monthly columns: the share of its members active in each calendar
    month since the one they joined (month 0), to date; months not begun are null."""
    acts = activity()
    offset = d.month_number(d.local_date(acts.c.at, members.c.timezone)) - d.month_number(
        members.c.joined
    )
    active = (
        select(members.c.id, members.c.joined, offset.label("offset"))
        .join(acts, acts.c.member_id == members.c.id)
        .where(acts.c.at < now, offset < months)
        .distinct()
        .subquery("active_months")
    )
    key = _month_key(d, active.c.joined)
    counts: dict[tuple[str, int], int] = {
        (row.cohort, int(row.offset)): int(row.active)
        for row in session.execute(
            select(key.label("cohort"), active.c.offset, func.count().label("active")).group_by(
                key, active.c.offset
            )
        )
    }
    _fill_months(cohorts, counts, months, now)


def _fill_months(
    cohorts: dict[str, Cohort], counts: dict[tuple[str, int], int], months: int, now: dt.datetime
) -> None:
    current = now.date()
    for name, cohort in cohorts.items():
        start = dt.date(int(name[:4]), int(name[5:7]), 1)
        for index in range(months):
            month = rules.add_months(start, index)
            begun = month <= current
            active_count = counts.get((name, index), 0) if begun else None
            cohort.months.append(
                {
                    "month": month.strftime("%Y-%m"),
                    "offset": index,
                    "active": active_count,
                    "rate": None
                    if active_count is None
                    else rules.rate(active_count, cohort.members),
                }
            )


def headline_rate(session: Session, as_of: dt.datetime) -> tuple[int, int]:
    """30-day retention as of ``as_of``: of the members who joined 60 to 30 days before
    (UTC days), how many were active in their days 8 to 30. (members, retained)."""
    d = Dialect(session)
    _, lo, hi = next(mark for mark in rules.MARKS if mark[0] == "day_30")
    end = as_of - dt.timedelta(days=rules.HEADLINE_DAYS)
    start = end - dt.timedelta(days=rules.HEADLINE_DAYS)
    joined = Member.enrolled_at >= start, Member.enrolled_at < end
    acts = activity()
    day = d.days_between(
        d.local_date(Member.enrolled_at, Member.timezone),
        d.local_date(acts.c.at, Member.timezone),
    )
    # Each member's own activity, found through the member-id indexes: local day n is within
    # n +- 1 days of the enrolment in UTC (n +- 3 leaves room for daylight saving and zones
    # that changed their offset), then the exact local day.
    # A scalar subquery (LIMIT 1), not EXISTS: PostgreSQL would make EXISTS a semi-join that
    # hashes every activity; this probes the indexes member by member.
    active = (
        select(literal(1))
        .where(
            acts.c.member_id == Member.id,
            acts.c.at > d.plus_days(Member.enrolled_at, lo - 3),
            acts.c.at < d.plus_days(Member.enrolled_at, hi + 3),
            acts.c.at < as_of,
            day >= lo,
            day <= hi,
        )
        .limit(1)
        .correlate(Member)
        .scalar_subquery()
    )
    total = session.scalar(select(func.count()).select_from(Member).where(*joined)) or 0
    retained = session.scalar(
        select(func.count()).select_from(Member).where(*joined, active.is_not(None))
    )
    return int(total), int(retained or 0)


def retention_headline(session: Session, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """The headline: 30-day retention of the latest members past their day 30, now, a week
    ago and a month ago."""
    now = now or clock.now()
    result: dict[str, Any] = {}
    for label, back in (("current", 0), ("week_ago", 7), ("month_ago", 30)):
        members, retained = headline_rate(session, now - dt.timedelta(days=back))
        result[label] = {
            "members": members,
            "retained": retained,
            "rate": rules.rate(retained, members),
        }
    return result
