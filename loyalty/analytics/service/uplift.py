"""Campaign uplift: the campaign's target split into treated members and the held-out share
(`loyalty.earning.rules.in_holdout`), compared over the campaign's window."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, case, func, select, text
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.analytics import rules
from loyalty.analytics.models import MemberStage
from loyalty.analytics.service._sql import Dialect, base_tier
from loyalty.analytics.service.settings import get_settings
from loyalty.db import UTCDateTime
from loyalty.earning import rules as earning_rules
from loyalty.earning import service as earning
from loyalty.ledger import reporting as ledger
from loyalty.ledger import rules as ledger_rules
from loyalty.members.models import Member
from loyalty.tiers import reporting as tiers_reporting


def _population(session: Session, campaign: Any) -> list[str]:
    """The members the campaign targets: enrolled before it ended and, for a tier or stage
    target, in it now (tiers and stages are not kept as of the campaign's start)."""
    query = select(Member.id).where(Member.enrolled_at < campaign.ends_at)
    values = list(campaign.target_values or [])
    if campaign.target == "members":
        query = query.where(Member.id.in_(values))
    elif campaign.target == "tiers":
        tiers = tiers_reporting.member_tiers(clock.now()).subquery()
        base = base_tier(session)
        query = query.outerjoin(tiers, tiers.c.member_id == Member.id).where(
            func.coalesce(tiers.c.code, base).in_(values)
        )
    elif campaign.target == "stages":
        query = query.join(MemberStage, MemberStage.member_id == Member.id).where(
            MemberStage.stage.in_(values)
        )
    return list(session.scalars(query))


def _campaign_points(
    session: Session, d: Dialect, campaign_id: str, start: Any, end: Any
) -> dict[str, int]:
    """Points the campaign gave each member in the window, from the orders' breakdowns."""
    rule = f"campaign:{campaign_id}"
    if d.postgresql:
        sql = (
            "SELECT o.member_id, SUM((c.value->>'points')::bigint) FROM orders o "
            "CROSS JOIN LATERAL jsonb_array_elements(o.breakdown) AS c(value) "
            "WHERE o.placed_at >= :start AND o.placed_at < :end AND c.value->>'rule' = :rule "
            "GROUP BY o.member_id"
        )
    else:
        sql = (
            "SELECT o.member_id, SUM(json_extract(c.value, '$.points')) FROM orders o, "
            "json_each(o.breakdown) AS c WHERE o.placed_at >= :start AND o.placed_at < :end "
            "AND json_extract(c.value, '$.rule') = :rule GROUP BY o.member_id"
        )
    statement = text(sql).bindparams(
        bindparam("start", start, type_=UTCDateTime),
        bindparam("end", end, type_=UTCDateTime),
        bindparam("rule", rule),
    )
    return {member_id: int(points or 0) for member_id, points in session.execute(statement)}


def uplift(session: Session, *, campaign_id: str, currency: str | None = None) -> dict[str, Any]:
    """Treated vs held-out members over the campaign's window (to now, if it is running):
    the share who bought, spend per member and points given, the differences with 95%
    confidence intervals, the incremental revenue and its return on the points' money cost.
    Raises `CampaignNotFoundError`. Reads only."""
    campaign = earning.get_campaign(session, campaign_id)
    settings = get_settings(session)
    currency = currency or settings.currency
    d = Dialect(session)
    now = clock.now()
    start, end = campaign.starts_at, min(campaign.ends_at, now)
    population = _population(session, campaign)
    held = {m for m in population if earning_rules.in_holdout(campaign.id, m, campaign.holdout_pct)}
    orders = ledger.counted_orders().subquery()
    money = orders.c.total - orders.c.amount_refunded
    spend = (
        {
            row.member_id: (int(row.orders), int(row.revenue or 0))
            for row in session.execute(
                select(
                    orders.c.member_id,
                    func.count().label("orders"),
                    func.sum(case((orders.c.currency == currency, money), else_=0)).label(
                        "revenue"
                    ),
                )
                .where(orders.c.placed_at >= start, orders.c.placed_at < end)
                .group_by(orders.c.member_id)
            )
        }
        if end > start
        else {}
    )
    points = _campaign_points(session, d, campaign.id, start, end) if end > start else {}
    groups: dict[str, dict[str, Any]] = {}
    for name, members in (
        ("treated", [m for m in population if m not in held]),
        ("held_out", [m for m in population if m in held]),
    ):
        revenues = [spend.get(m, (0, 0))[1] for m in members]
        buyers = sum(1 for m in members if spend.get(m, (0, 0))[0] > 0)
        given = sum(points.get(m, 0) for m in members)
        groups[name] = {
            "members": len(members),
            "buyers": buyers,
            "purchase_rate": rules.rate(buyers, len(members)),
            "revenue": sum(revenues),
            "spend_per_member": None if not members else round(sum(revenues) / len(members), 2),
            "points": given,
            "_moments": (len(members), float(sum(revenues)), float(sum(r * r for r in revenues))),
        }
    treated, control = groups["treated"], groups["held_out"]
    rate_diff = rules.proportion_difference(
        treated["buyers"], treated["members"], control["buyers"], control["members"]
    )
    spend_diff = rules.mean_difference(treated.pop("_moments"), control.pop("_moments"))
    exponent = ledger_rules.currency_exponent(currency) or 0
    cost = Decimal(treated["points"]) * settings.cost_per_point * Decimal(10) ** exponent
    incremental = None
    if spend_diff is not None:
        # Exact means (the reported difference is rounded to 4 places).
        per_member = (
            treated["revenue"] / treated["members"] - control["revenue"] / control["members"]
        )
        incremental = round(per_member * treated["members"], 2)
    return {
        "campaign_id": campaign.id,
        "name": campaign.name,
        "starts_at": campaign.starts_at,
        "ends_at": campaign.ends_at,
        "measured_until": end,
        "holdout_pct": campaign.holdout_pct,
        "currency": currency,
        "treated": treated,
        "held_out": control,
        "purchase_rate_uplift": _interval(rate_diff),
        "spend_per_member_uplift": _interval(spend_diff),
        "incremental_revenue": incremental,
        "points_cost": round(float(cost), 2),
        "return_on_cost": None
        if incremental is None or cost == 0
        else round(incremental / float(cost), 4),
    }


def _interval(value: tuple[float, float, float] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"difference": value[0], "low": value[1], "high": value[2], "confidence": 0.95}
