"""Repurchase and lifetime value, from orders that were not refunded in full; money in the
analytics currency (net of refunds, minor units)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.analytics import rules
from loyalty.analytics.models import OrderFacts
from loyalty.analytics.service import facts
from loyalty.analytics.service._sql import Dialect, period
from loyalty.analytics.service.settings import get_settings
from loyalty.ledger import reporting as ledger
from loyalty.members.models import Member

HOURS_72 = 72 * 3600
YEAR_DAYS = 365
# The estimate's retention period is at most this many years.
MAX_LIFETIME_YEARS = 10


def _firsts() -> Any:
    orders = ledger.counted_orders().subquery()
    return (
        select(orders.c.member_id, func.min(orders.c.placed_at).label("at"))
        .group_by(orders.c.member_id)
        .subquery("first_orders")
    )


def repurchase(
    session: Session,
    *,
    first: dt.date | None = None,
    last: dt.date | None = None,
    currency: str | None = None,
) -> dict[str, Any]:
    """Repurchase over the period: buyers, repeat buyers and the repurchase rate, orders per
    buyer, the share of revenue from repeat orders, average order values, and the 72-hour and
    annual repurchase rates of the members whose first order fell in the period. Reads only."""
    d = Dialect(session)
    span = period(session, first, last)
    currency = currency or get_settings(session).currency
    now = clock.now()
    orders = ledger.counted_orders().subquery()
    kept = facts.state(session, now)
    # Each member's first order: from the order facts and the orders since, once built.
    firsts = _firsts() if kept is None else facts.first_orders(kept.through, currency)
    money = orders.c.total - orders.c.amount_refunded
    in_currency = orders.c.currency == currency
    per_member = (
        select(
            orders.c.member_id,
            func.count().label("orders"),
            func.sum(case((in_currency, 1), else_=0)).label("priced"),
            func.sum(case((in_currency, money), else_=0)).label("revenue"),
            func.sum(case((orders.c.placed_at > firsts.c.at, 1), else_=0)).label("repeat_orders"),
            func.sum(
                case(((orders.c.placed_at > firsts.c.at) & in_currency, money), else_=0)
            ).label("repeat_revenue"),
        )
        .join(firsts, firsts.c.member_id == orders.c.member_id)
        .where(orders.c.placed_at >= span.start, orders.c.placed_at < span.end)
        .group_by(orders.c.member_id)
        .subquery("buyers")
    )
    repeat = per_member.c.orders >= 2
    totals = session.execute(
        select(
            func.count().label("buyers"),
            func.coalesce(func.sum(case((repeat, 1), else_=0)), 0).label("repeat_buyers"),
            func.coalesce(func.sum(per_member.c.orders), 0).label("orders"),
            func.coalesce(func.sum(per_member.c.priced), 0).label("priced"),
            func.coalesce(func.sum(per_member.c.revenue), 0).label("revenue"),
            func.coalesce(func.sum(per_member.c.repeat_revenue), 0).label("repeat_revenue"),
            func.coalesce(func.sum(case((repeat, per_member.c.priced), else_=0)), 0).label(
                "repeat_buyer_priced"
            ),
            func.coalesce(func.sum(case((repeat, per_member.c.revenue), else_=0)), 0).label(
                "repeat_buyer_revenue"
            ),
        )
    ).one()
    # Members whose first order fell in the period: did a second follow within 72 hours, a year?
    seconds = _first_buyers(firsts, span.start, span.end, kept is not None)
    gap = d.seconds_between(seconds.c.at, seconds.c.second_at)
    over = d.seconds_between(seconds.c.at, now)
    spans = (("within_72_hours", HOURS_72), ("within_1_year", YEAR_DAYS * 86400))
    # Both windows in one pass over the first and second orders.
    columns: list[Any] = [func.count().label("first_buyers")]
    for name, seconds_ in spans:
        columns.append(
            func.coalesce(func.sum(case((over >= seconds_, 1), else_=0)), 0).label(
                f"{name}_eligible"
            )
        )
        columns.append(
            func.coalesce(
                func.sum(case(((over >= seconds_) & (gap <= seconds_), 1), else_=0)), 0
            ).label(f"{name}_repurchased")
        )
    row = session.execute(select(*columns)).one()._mapping
    windows = {}
    for name, _seconds in spans:
        eligible, repurchased = int(row[f"{name}_eligible"]), int(row[f"{name}_repurchased"])
        windows[name] = {
            "first_buyers": int(row["first_buyers"]),
            "eligible": eligible,
            "repurchased": repurchased,
            "rate": rules.rate(repurchased, eligible),
        }
    priced, revenue = int(totals.priced), int(totals.revenue)
    return {
        "first": span.first,
        "last": span.last,
        "currency": currency,
        "buyers": int(totals.buyers),
        "repeat_buyers": int(totals.repeat_buyers),
        "repurchase_rate": rules.rate(int(totals.repeat_buyers), int(totals.buyers)),
        "orders": int(totals.orders),
        "repurchase_frequency": None
        if not totals.buyers
        else round(int(totals.orders) / int(totals.buyers), 4),
        "revenue": revenue,
        "repeat_revenue": int(totals.repeat_revenue),
        "repeat_revenue_share": rules.rate(int(totals.repeat_revenue), revenue),
        "average_order_value": _average(revenue, priced),
        "repeat_buyers_average_order_value": _average(
            int(totals.repeat_buyer_revenue), int(totals.repeat_buyer_priced)
        ),
        "repurchase_72_hours": windows["within_72_hours"],
        "repurchase_annual": windows["within_1_year"],
    }


def _first_buyers(firsts: Any, start: dt.datetime, end: dt.datetime, kept: bool) -> Any:
    """The members whose first order (of ``firsts``) fell in ``[start, end)``: ``member_id``,
    ``at`` and ``second_at`` (the next counted order strictly after it, if any). The order facts'
    ``firsts`` carry the second; else it is read from the orders."""
    in_period = (firsts.c.at >= start, firsts.c.at < end)
    if kept:
        return (
            select(firsts.c.member_id, firsts.c.at, firsts.c.second_at)
            .where(*in_period)
            .subquery("second_orders")
        )
    later = ledger.counted_orders().subquery()
    return (
        select(firsts.c.member_id, firsts.c.at, func.min(later.c.placed_at).label("second_at"))
        .outerjoin(
            later,
            (later.c.member_id == firsts.c.member_id) & (later.c.placed_at > firsts.c.at),
        )
        .where(*in_period)
        .group_by(firsts.c.member_id, firsts.c.at)
        .subquery("second_orders")
    )


def _average(total: int, count: int) -> float | None:
    return None if count == 0 else round(total / count, 2)


@dataclass(frozen=True)
class _Year:
    buyers: int
    orders: int
    priced: int
    revenue: int


def lifetime_value(
    session: Session,
    *,
    first: dt.date | None = None,
    last: dt.date | None = None,
    currency: str | None = None,
) -> dict[str, Any]:
    """Revenue per member to date (members enrolled by the end of ``last``), per enrolment
    cohort (months of ``first`` to ``last``), and the estimate average order value x orders per
    buyer a year x expected years as a buyer (1 / (1 - the share of last year's buyers who
    bought again this year), at most 10). Reads only."""
    d = Dialect(session)
    span = period(session, first, last, default_days=365)
    currency = currency or get_settings(session).currency
    orders = ledger.counted_orders().subquery()
    money = orders.c.total - orders.c.amount_refunded
    in_currency = orders.c.currency == currency
    members_total = int(
        session.scalar(
            select(func.count()).select_from(Member).where(Member.enrolled_at < span.end)
        )
        or 0
    )
    # The order facts (orders before their ``through``) when they hold this currency and the
    # period ends after them; the orders since (to the period's end) from the orders.
    kept = facts.state(session, clock.now(), currency=currency)
    since = None if kept is None or span.end < kept.through else kept.through
    window = orders.c.placed_at < span.end
    if since is not None:
        window = window & (orders.c.placed_at >= since)
    revenue_total = int(
        session.scalar(select(func.coalesce(func.sum(money), 0)).where(in_currency, window)) or 0
    )
    if since is not None:
        revenue_total += int(
            session.scalar(select(func.coalesce(func.sum(OrderFacts.revenue), 0))) or 0
        )
    joined = d.local_date(Member.enrolled_at, Member.timezone)
    month = func.to_char(joined, "YYYY-MM") if d.postgresql else func.strftime("%Y-%m", joined)
    per_member = (
        select(
            orders.c.member_id,
            func.count().label("orders"),
            func.sum(case((in_currency, money), else_=0)).label("revenue"),
        )
        .where(window)
        .group_by(orders.c.member_id)
        .subquery("member_revenue")
    )
    member_orders: Any = func.coalesce(per_member.c.orders, 0)
    member_revenue: Any = func.coalesce(per_member.c.revenue, 0)
    members = Member.__table__.outerjoin(per_member, per_member.c.member_id == Member.id)
    if since is not None:
        members = members.outerjoin(OrderFacts, OrderFacts.member_id == Member.id)
        member_orders = member_orders + func.coalesce(OrderFacts.orders, 0)
        member_revenue = member_revenue + func.coalesce(OrderFacts.revenue, 0)
    rows = session.execute(
        select(
            month.label("cohort"),
            func.count().label("members"),
            func.coalesce(func.sum(member_orders), 0).label("orders"),
            func.coalesce(func.sum(member_revenue), 0).label("revenue"),
        )
        .select_from(members)
        .where(
            Member.enrolled_at >= span.start - dt.timedelta(days=1),
            Member.enrolled_at < span.end + dt.timedelta(days=1),
            joined >= d.as_date(span.first.replace(day=1)),
            joined <= d.as_date(span.last),
        )
        .group_by(month)
        .order_by(month)
    ).all()
    cohorts = [
        {
            "cohort": row.cohort,
            "members": int(row.members),
            "orders": int(row.orders),
            "revenue": int(row.revenue),
            "revenue_per_member": _average(int(row.revenue), int(row.members)),
        }
        for row in rows
    ]
    this_year, last_year_buyers, stayed = _years(session, span.end, currency)
    retention = rules.rate(stayed, last_year_buyers)
    aov = _average(this_year.revenue, this_year.priced)
    frequency = None if not this_year.buyers else round(this_year.orders / this_year.buyers, 4)
    years = None
    if retention is not None:
        years = (
            MAX_LIFETIME_YEARS if retention >= 1 else min(MAX_LIFETIME_YEARS, 1 / (1 - retention))
        )
        years = round(years, 4)
    estimate = None
    if aov is not None and frequency is not None and years is not None:
        estimate = round(aov * frequency * years, 2)
    return {
        "first": span.first,
        "last": span.last,
        "currency": currency,
        "members": members_total,
        "revenue": revenue_total,
        "revenue_per_member": _average(revenue_total, members_total),
        "cohorts": cohorts,
        "estimate": {
            "average_order_value": aov,
            "orders_per_buyer_per_year": frequency,
            "annual_buyer_retention": retention,
            "expected_years": years,
            "lifetime_value": estimate,
        },
    }


def _years(session: Session, end: dt.datetime, currency: str) -> tuple[_Year, int, int]:
    """The last 12 months before ``end`` (buyers, orders, priced orders, revenue), the buyers
    of the 12 months before those, and how many of them bought again in the last 12: one pass
    over the two years' orders, grouped by member."""
    orders = ledger.counted_orders().subquery()
    money = orders.c.total - orders.c.amount_refunded
    in_currency = orders.c.currency == currency
    year_start = end - dt.timedelta(days=YEAR_DAYS)
    this_year = orders.c.placed_at >= year_start
    members = (
        select(
            func.max(case((this_year, 1), else_=0)).label("this_year"),
            func.max(case((this_year, 0), else_=1)).label("last_year"),
            func.sum(case((this_year, 1), else_=0)).label("orders"),
            func.sum(case((this_year & in_currency, 1), else_=0)).label("priced"),
            func.sum(case((this_year & in_currency, money), else_=0)).label("revenue"),
        )
        .where(
            orders.c.placed_at >= end - dt.timedelta(days=2 * YEAR_DAYS),
            orders.c.placed_at < end,
        )
        .group_by(orders.c.member_id)
        .subquery("two_years")
    )
    row = session.execute(
        select(
            func.coalesce(func.sum(members.c.this_year), 0).label("buyers"),
            func.coalesce(func.sum(members.c.orders), 0).label("orders"),
            func.coalesce(func.sum(members.c.priced), 0).label("priced"),
            func.coalesce(func.sum(members.c.revenue), 0).label("revenue"),
            func.coalesce(func.sum(members.c.last_year), 0).label("last_year_buyers"),
            func.coalesce(
                func.sum(
                    case(((members.c.this_year == 1) & (members.c.last_year == 1), 1), else_=0)
                ),
                0,
            ).label("stayed"),
        )
    ).one()
    year = _Year(int(row.buyers), int(row.orders), int(row.priced), int(row.revenue))
    return year, int(row.last_year_buyers), int(row.stayed)
