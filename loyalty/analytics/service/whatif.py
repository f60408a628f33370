"""Tier what-if: with proposed thresholds (and optionally another metric or window), which
tier each member would hold today; nothing is saved."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.analytics.service._sql import base_tier
from loyalty.errors import InvalidFieldError
from loyalty.ledger import reporting as ledger
from loyalty.ledger import rules as ledger_rules
from loyalty.members.models import Member
from loyalty.tiers import reporting as tiers_reporting
from loyalty.tiers import rules as tier_rules
from loyalty.tiers import service as tiers_service


def _values(
    session: Session, metric: str, since: dt.datetime | None, now: dt.datetime
) -> dict[str, int]:
    """Each member's qualification metric over the window (members with none are absent),
    measured as the tiers measure it (`loyalty.ledger.service.activity`)."""
    if metric == "points" and since is None:
        # Over a lifetime the wallet's earned total (the sum of its entries' earned points,
        # invariant 2), as the tiers read it: one row per member, not every entry.
        wallets = ledger.wallets().subquery()
        rows = session.execute(select(wallets.c.member_id, wallets.c.lifetime_earned))
        return {m: int(v) for m, v in rows if v}
    if metric == "points":
        entries = ledger.entries().subquery()
        query = select(entries.c.member_id, func.sum(entries.c.earned_delta)).where(
            entries.c.created_at <= now
        )
        if since is not None:
            query = query.where(entries.c.created_at >= since)
        return {m: int(v) for m, v in session.execute(query.group_by(entries.c.member_id)) if v}
    orders = ledger.counted_orders().subquery()
    money = orders.c.total - orders.c.amount_refunded
    by_currency = select(
        orders.c.member_id, orders.c.currency, func.sum(money), func.count()
    ).where(orders.c.placed_at <= now)
    if since is not None:
        by_currency = by_currency.where(orders.c.placed_at >= since)
    spend: dict[str, Decimal] = {}
    counts: Counter[str] = Counter()
    for member_id, currency, total, count in session.execute(
        by_currency.group_by(orders.c.member_id, orders.c.currency)
    ):
        exponent = ledger_rules.currency_exponent(currency) or 0
        spend[member_id] = (
            spend.get(member_id, Decimal(0)) + Decimal(int(total)) / Decimal(10) ** exponent
        )
        counts[member_id] += int(count)
    if metric == "spend":
        return {m: int(v) for m, v in spend.items()}
    return dict(counts)


def tier_what_if(
    session: Session,
    *,
    thresholds: dict[str, int] | None = None,
    metric: str | None = None,
    window: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Members per tier today and as proposed, how many move up or down, and a page of the
    movers (by member id). Members with a manual tier keep it. Raises `InvalidFieldError`
    for a threshold of an unknown tier or a ladder whose thresholds do not rise with rank."""
    thresholds = thresholds or {}
    tiers = tiers_service.list_tiers(session)
    known = {tier.code for tier in tiers}
    unknown = sorted(set(thresholds) - known)
    if unknown:
        raise InvalidFieldError(
            f"thresholds/{unknown[0]}", f"No tier {unknown[0]!r} on the ladder.", tier=unknown[0]
        )
    policy = tiers_service.get_policy(session)
    metric = metric or policy.metric
    window = window or policy.window
    ladder = [
        tier_rules.Rung(
            code=tier.code,
            name=tier.name,
            rank=tier.rank,
            threshold=thresholds.get(tier.code, tier.threshold),
        )
        for tier in tiers
    ]
    problem = tier_rules.ladder_problem(ladder)
    if problem:
        raise InvalidFieldError("thresholds", problem)
    ladder = tier_rules.sort_ladder(ladder)
    rank = {rung.code: rung.rank for rung in ladder}
    now = clock.now()
    values = _values(session, metric, tier_rules.window_start(window, now), now)
    current_tiers = tiers_reporting.member_tiers(now).subquery()
    base = base_tier(session)
    rows = session.execute(
        select(Member.id, Member.external_id, current_tiers.c.code, current_tiers.c.manual)
        .outerjoin(current_tiers, current_tiers.c.member_id == Member.id)
        .where(Member.status != "closed")
        .order_by(Member.id)
    )
    now_counts: Counter[str | None] = Counter()
    proposed_counts: Counter[str | None] = Counter()
    up = down = 0
    movers: list[dict[str, Any]] = []
    more = False
    for member_id, external_id, code, manual in rows:
        current = code or base
        value = values.get(member_id, 0)
        reached = tier_rules.qualified_tier(ladder, value)
        proposed = current if manual else (reached.code if reached else None)
        now_counts[current] += 1
        proposed_counts[proposed] += 1
        if proposed == current:
            continue
        direction = "up" if rank.get(proposed or "", 0) > rank.get(current or "", 0) else "down"
        if direction == "up":
            up += 1
        else:
            down += 1
        if cursor is not None and member_id <= cursor:
            continue
        if len(movers) < limit:
            movers.append(
                {
                    "member_id": member_id,
                    "external_id": external_id,
                    "from_tier": current,
                    "to_tier": proposed,
                    "metric_value": value,
                    "direction": direction,
                }
            )
        else:
            more = True
    codes: list[str | None] = [rung.code for rung in ladder]
    if None in now_counts or None in proposed_counts or not codes:
        codes = [None, *codes]
    return {
        "metric": metric,
        "window": window,
        "tiers": [
            {
                "tier": code,
                "threshold": next((r.threshold for r in ladder if r.code == code), None),
                "members_now": now_counts.get(code, 0),
                "members_proposed": proposed_counts.get(code, 0),
            }
            for code in codes
        ],
        "moving_up": up,
        "moving_down": down,
        "items": movers,
        "next_cursor": movers[-1]["member_id"] if more and movers else None,
    }
