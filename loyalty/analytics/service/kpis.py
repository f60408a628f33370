"""Programme KPIs over a period and the points liability: points issued, redeemed, expired and
outstanding (in points and in money at the cost per point), breakage and redemption rates,
tiers, referrals, reward claims, badges and community activity."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.analytics import rules
from loyalty.analytics.service._sql import activity, base_tier, period
from loyalty.analytics.service.settings import get_settings
from loyalty.community import reporting as community
from loyalty.ledger import reporting as ledger
from loyalty.ledger import rules as ledger_rules
from loyalty.members.models import Member
from loyalty.referrals import reporting as referrals
from loyalty.rewards import reporting as rewards
from loyalty.tiers import reporting as tiers_reporting

MONTH_DAYS = 30


def _money(session: Session, points: int) -> dict[str, Any]:
    settings = get_settings(session)
    return {
        "amount": str(
            (Decimal(points) * settings.cost_per_point).quantize(_places(settings.currency))
        ),
        "currency": settings.currency,
    }


def _places(currency: str) -> Decimal:
    exponent = ledger_rules.currency_exponent(currency) or 0
    return Decimal(1).scaleb(-exponent)


def points_movements(session: Session, start: dt.datetime, end: dt.datetime) -> dict[str, int]:
    """Points issued (credited, gross), reversed (taken back from orders and bonuses),
    redeemed (net of points given back), expired and adjusted (net) in ``[start, end)``, and
    outstanding at ``end``: what every member's buckets hold, the opposite of the
    counter-accounts' sum."""
    entries = ledger.entries().subquery()
    issuance = entries.c.counter_account == "issuance"
    in_period = and_(entries.c.created_at >= start, entries.c.created_at < end)

    def total(condition: Any, value: Any) -> Any:
        return func.coalesce(func.sum(case((and_(in_period, condition), value), else_=0)), 0)

    row = session.execute(
        select(
            total(issuance & (entries.c.counter_amount < 0), -entries.c.counter_amount).label(
                "issued"
            ),
            total(issuance & (entries.c.counter_amount > 0), entries.c.counter_amount).label(
                "reversed"
            ),
            total(entries.c.counter_account == "redemption", entries.c.counter_amount).label(
                "redeemed"
            ),
            total(entries.c.counter_account == "expiry", entries.c.counter_amount).label("expired"),
            total(entries.c.counter_account == "adjustment", -entries.c.counter_amount).label(
                "adjusted"
            ),
            func.coalesce(func.sum(-entries.c.counter_amount), 0).label("outstanding"),
        ).where(entries.c.created_at < end)
    ).one()
    return {name: int(value) for name, value in row._mapping.items()}


def kpis(
    session: Session, *, first: dt.date | None = None, last: dt.date | None = None
) -> dict[str, Any]:
    """The programme's KPIs over the period (default the last 30 days). Reads only."""
    span = period(session, first, last)
    now = clock.now()
    acts = activity()
    # count(*) of a DISTINCT subquery, not count(DISTINCT): PostgreSQL can hash the members
    # instead of sorting a year of activity.
    active = session.scalar(
        select(func.count()).select_from(
            select(acts.c.member_id)
            .where(acts.c.at >= span.start, acts.c.at < span.end)
            .distinct()
            .subquery("active")
        )
    )
    members = session.scalar(
        select(func.count()).select_from(Member).where(Member.enrolled_at < span.end)
    )
    joined = session.scalar(
        select(func.count())
        .select_from(Member)
        .where(Member.enrolled_at >= span.start, Member.enrolled_at < span.end)
    )
    points = points_movements(session, span.start, span.end)
    settled = points["redeemed"] + points["expired"]
    tiers = _tiers(session, span.start, span.end, now)
    refs = referrals.referrals().subquery()
    referral = session.execute(
        select(
            func.count().label("referrals"),
            func.coalesce(func.sum(case((refs.c.qualified_at.is_not(None), 1), else_=0)), 0).label(
                "qualified"
            ),
        ).where(refs.c.created_at >= span.start, refs.c.created_at < span.end)
    ).one()
    claims = rewards.claims().subquery()
    claim = session.execute(
        select(
            func.count().label("claims"),
            func.coalesce(func.sum(claims.c.points), 0).label("points"),
            func.coalesce(func.sum(case((claims.c.status == "used", 1), else_=0)), 0).label("used"),
        ).where(claims.c.created_at >= span.start, claims.c.created_at < span.end)
    ).one()
    awards = community.badge_awards().subquery()
    badges = session.scalar(
        select(func.count()).where(
            awards.c.awarded_at >= span.start,
            awards.c.awarded_at < span.end,
            awards.c.revoked_at.is_(None),
        )
    )
    events = community.events().subquery()
    month_start = span.end - dt.timedelta(days=MONTH_DAYS)
    community_active = session.scalar(
        select(func.count(func.distinct(events.c.member_id))).where(
            events.c.occurred_at >= month_start, events.c.occurred_at < span.end
        )
    )
    return {
        "first": span.first,
        "last": span.last,
        "members": int(members or 0),
        "new_members": int(joined or 0),
        "active_members": int(active or 0),
        "active_rate": rules.rate(int(active or 0), int(members or 0)),
        "points": {
            name: {"points": value, "money": _money(session, value)}
            for name, value in points.items()
        },
        "redemption_rate": rules.rate(points["redeemed"], points["issued"]),
        "breakage_rate": rules.rate(points["expired"], settled),
        "tiers": tiers,
        "referrals": {
            "referrals": int(referral.referrals),
            "qualified": int(referral.qualified),
            "conversion_rate": rules.rate(int(referral.qualified), int(referral.referrals)),
        },
        "reward_claims": {
            "claims": int(claim.claims),
            "points": int(claim.points),
            "used": int(claim.used),
        },
        "badge_awards": int(badges or 0),
        "community_monthly_active": int(community_active or 0),
        "community_monthly_active_rate": rules.rate(int(community_active or 0), int(members or 0)),
    }


def _tiers(
    session: Session, start: dt.datetime, end: dt.datetime, now: dt.datetime
) -> dict[str, Any]:
    """Members by tier now, and the tier changes of the period by kind."""
    tiers = tiers_reporting.member_tiers(now).subquery()
    code = func.coalesce(tiers.c.code, literal(base_tier(session)))
    distribution = [
        {"tier": row.tier, "members": int(row.members)}
        for row in session.execute(
            select(code.label("tier"), func.count().label("members"))
            .select_from(Member)
            .outerjoin(tiers, tiers.c.member_id == Member.id)
            .group_by(code)
            .order_by(code)
        )
    ]
    changes = tiers_reporting.changes().subquery()
    movement = {
        row.kind: int(row.changes)
        for row in session.execute(
            select(changes.c.kind, func.count().label("changes"))
            .where(changes.c.at >= start, changes.c.at < end)
            .group_by(changes.c.kind)
        )
    }
    return {
        "distribution": distribution,
        "movement": {
            kind: movement.get(kind, 0)
            for kind in ("upgrade", "downgrade", "renewal", "manual", "manual_ended")
        },
    }


def liability(session: Session) -> dict[str, Any]:
    """What the programme owes now: members' available, pending and held points (and debt)
    in points and money, and when the unspent points expire, by month for the next 12
    months. Reads only."""
    wallets = ledger.wallets().subquery()
    row = session.execute(
        select(
            func.coalesce(
                func.sum(case((wallets.c.available > 0, wallets.c.available), else_=0)), 0
            ).label("available"),
            func.coalesce(func.sum(wallets.c.pending), 0).label("pending"),
            func.coalesce(func.sum(wallets.c.held), 0).label("held"),
            func.coalesce(func.sum(wallets.c.debt), 0).label("debt"),
            func.count().label("wallets"),
        )
    ).one()
    owed = int(row.available) + int(row.pending) + int(row.held)
    now = clock.now()
    lots = ledger.unspent_lots().subquery()
    months = []
    start = now.date().replace(day=1)
    for index in range(12):
        first = rules.add_months(start, index)
        after = rules.add_months(start, index + 1)
        lo = max(now, dt.datetime.combine(first, dt.time(), dt.UTC))
        hi = dt.datetime.combine(after, dt.time(), dt.UTC)
        months.append((first.strftime("%Y-%m"), lo, hi))
    expiring = session.execute(
        select(
            *[
                func.coalesce(
                    func.sum(
                        case(
                            (
                                (lots.c.expires_at >= lo) & (lots.c.expires_at < hi),
                                lots.c.remaining,
                            ),
                            else_=0,
                        )
                    ),
                    0,
                ).label(f"m{index}")
                for index, (_, lo, hi) in enumerate(months)
            ],
            func.coalesce(
                func.sum(case((lots.c.expires_at.is_(None), lots.c.remaining), else_=0)), 0
            ).label("never"),
        )
    ).one()
    settings = get_settings(session)
    return {
        "as_of": now,
        "currency": settings.currency,
        "cost_per_point": str(settings.cost_per_point),
        "outstanding": {"points": owed, "money": _money(session, owed)},
        "available": {"points": int(row.available), "money": _money(session, int(row.available))},
        "pending": {"points": int(row.pending), "money": _money(session, int(row.pending))},
        "held": {"points": int(row.held), "money": _money(session, int(row.held))},
        "debt": {"points": int(row.debt), "money": _money(session, int(row.debt))},
        "expiring": [
            {"month": name, "points": int(expiring[index])}
            for index, (name, _, _) in enumerate(months)
        ],
        "never_expiring": int(expiring.never),
    }
