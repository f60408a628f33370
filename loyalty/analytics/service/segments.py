"""Reports on the stored stages: members by lifecycle stage and RFM segment, the RFM grid,
one member's analytics with history, and the churn warning's flags, win-back and precision."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.analytics import rules
from loyalty.analytics.models import MemberStage, RiskFlag, StageChange
from loyalty.analytics.service._sql import base_tier, period
from loyalty.db import Page
from loyalty.members.errors import MemberNotFoundError
from loyalty.members.models import Member
from loyalty.members.rules import STAGES
from loyalty.tiers import reporting as tiers_reporting


def segments(session: Session, *, tier: str | None = None) -> dict[str, Any]:
    """Members by lifecycle stage and by RFM segment (as the worker last computed them),
    and the recency x frequency grid of scores; optionally only members of a tier. Reads
    only."""
    query = select(
        MemberStage.stage,
        MemberStage.segment,
        MemberStage.recency,
        MemberStage.frequency,
        func.count().label("members"),
    )
    if tier is not None:
        query = query.where(_tier_filter(session, tier))
    rows = session.execute(
        query.group_by(
            MemberStage.stage, MemberStage.segment, MemberStage.recency, MemberStage.frequency
        )
    ).all()
    total = sum(int(row.members) for row in rows)
    by_stage = {stage: 0 for stage in STAGES}
    by_segment = {segment: 0 for segment in rules.SEGMENTS}
    no_orders = 0
    grid: dict[tuple[int, int], int] = {}
    for row in rows:
        count = int(row.members)
        by_stage[row.stage] += count
        if row.segment is None:
            no_orders += count
        else:
            by_segment[row.segment] += count
        if row.recency is not None:
            key = (int(row.recency), int(row.frequency))
            grid[key] = grid.get(key, 0) + count
    computed_at = session.scalar(select(func.max(MemberStage.computed_at)))
    return {
        "computed_at": computed_at,
        "members": total,
        "stages": [
            {"stage": stage, "members": count, "share": rules.rate(count, total)}
            for stage, count in by_stage.items()
        ],
        "segments": [
            {"segment": segment, "members": count, "share": rules.rate(count, total)}
            for segment, count in by_segment.items()
        ]
        + [{"segment": None, "members": no_orders, "share": rules.rate(no_orders, total)}],
        "rfm_grid": [
            {"recency": r, "frequency": f, "members": grid.get((r, f), 0)}
            for r in range(5, 0, -1)
            for f in range(1, 6)
        ],
    }


def _tier_filter(session: Session, tier: str) -> Any:
    """Members (of `MemberStage`) whose effective tier is ``tier`` now."""
    tiers = tiers_reporting.member_tiers(clock.now()).subquery()
    base = base_tier(session)
    code = select(tiers.c.code).where(tiers.c.member_id == MemberStage.member_id).scalar_subquery()
    if base == tier:
        return func.coalesce(code, base) == tier
    return code == tier


def member_analytics(session: Session, member_id: str) -> dict[str, Any]:
    """One member's stage, scores, segment, open flag and the last 50 changes of stage.
    Raises `MemberNotFoundError`."""
    if session.get(Member, member_id) is None:
        raise MemberNotFoundError(member_id)
    stage = session.get(MemberStage, member_id)
    flag = session.scalar(
        select(RiskFlag)
        .where(RiskFlag.member_id == member_id)
        .order_by(RiskFlag.flagged_at.desc(), RiskFlag.id.desc())
        .limit(1)
    )
    history = list(
        session.scalars(
            select(StageChange)
            .where(StageChange.member_id == member_id)
            .order_by(StageChange.id.desc())
            .limit(50)
        )
    )
    return {
        "member_id": member_id,
        "stage": stage.stage if stage else None,
        "stage_since": stage.since if stage else None,
        "segment": stage.segment if stage else None,
        "recency": stage.recency if stage else None,
        "frequency": stage.frequency if stage else None,
        "monetary": stage.monetary if stage else None,
        "last_active_at": stage.last_active_at if stage else None,
        "computed_at": stage.computed_at if stage else None,
        "risk": _flag(flag) if flag else None,
        "history": [
            {
                "from_stage": change.from_stage,
                "to_stage": change.to_stage,
                "from_segment": change.from_segment,
                "to_segment": change.to_segment,
                "at": change.at,
            }
            for change in history
        ],
    }


def _flag(flag: RiskFlag) -> dict[str, Any]:
    return {
        "id": flag.id,
        "member_id": flag.member_id,
        "reason": flag.reason,
        "recent_activity": flag.recent,
        "baseline_activity": float(flag.baseline),
        "last_active_at": flag.last_active_at,
        "flagged_at": flag.flagged_at,
        "outcome": flag.outcome,
        "closed_at": flag.closed_at,
    }


def at_risk(
    session: Session,
    *,
    first: dt.date | None = None,
    last: dt.date | None = None,
    reason: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The members at risk now (open flags, newest first, a page), and for the flags raised
    in the period: how many, the win-back rate (won back within 30 days, of the flags whose
    30 days are over or that were won back) and the precision (churned, of the flags whose
    outcome is known). Reads only."""
    span = period(session, first, last, default_days=90)
    page = open_flags(session, reason=reason, limit=limit, cursor=cursor)
    open_count = session.scalar(_open_query(reason).with_only_columns(func.count()).order_by(None))
    window_over = clock.now() - dt.timedelta(days=rules.WIN_BACK_DAYS)
    raised = and_(RiskFlag.flagged_at >= span.start, RiskFlag.flagged_at < span.end)
    won = RiskFlag.outcome == "won_back"
    query = select(
        func.count().label("raised"),
        func.coalesce(func.sum(case((won, 1), else_=0)), 0).label("won_back"),
        func.coalesce(
            func.sum(case(((RiskFlag.flagged_at <= window_over) | won, 1), else_=0)), 0
        ).label("win_back_eligible"),
        func.coalesce(func.sum(case((RiskFlag.outcome == "churned", 1), else_=0)), 0).label(
            "churned"
        ),
        func.coalesce(func.sum(case((RiskFlag.outcome.is_not(None), 1), else_=0)), 0).label(
            "resolved"
        ),
    ).where(raised)
    if reason is not None:
        query = query.where(RiskFlag.reason == reason)
    row = session.execute(query).one()
    return {
        "first": span.first,
        "last": span.last,
        "open": int(open_count or 0),
        "raised": int(row.raised),
        "won_back": int(row.won_back),
        "win_back_rate": rules.rate(int(row.won_back), int(row.win_back_eligible)),
        "churned": int(row.churned),
        "precision": rules.rate(int(row.churned), int(row.resolved)),
        "items": page.items,
        "next_cursor": page.next_cursor,
    }


def _open_query(reason: str | None) -> Any:
    query = (
        select(RiskFlag, Member.external_id)
        .join(Member, Member.id == RiskFlag.member_id)
        .where(RiskFlag.closed_at.is_(None))
    )
    if reason is not None:
        query = query.where(RiskFlag.reason == reason)
    return query


def open_flags(
    session: Session, *, reason: str | None = None, limit: int = 50, cursor: str | None = None
) -> Page[dict[str, Any]]:
    """Open flags, newest first (by id: ids are time-ordered)."""
    query = _open_query(reason).order_by(RiskFlag.id.desc())
    if cursor is not None:
        query = query.where(RiskFlag.id < cursor)
    rows = session.execute(query.limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [_flag(flag) | {"external_id": external_id} for flag, external_id in rows]
    return Page(items=items, next_cursor=rows[-1][0].id if more else None)


# The columns of an open flag as the CSV export writes them (those of `FlagSchema`).
FLAG_COLUMNS = (
    "id",
    "member_id",
    "external_id",
    "reason",
    "recent_activity",
    "baseline_activity",
    "last_active_at",
    "flagged_at",
    "outcome",
    "closed_at",
)


def all_open_flags(session: Session, *, reason: str | None = None) -> Iterator[tuple[Any, ...]]:
    """Every open flag, newest first, as rows of `FLAG_COLUMNS`: Core rows streamed from a
    server-side cursor in batches, no ORM objects (for CSV)."""
    query = (
        select(
            RiskFlag.id,
            RiskFlag.member_id,
            Member.external_id,
            RiskFlag.reason,
            RiskFlag.recent,
            RiskFlag.baseline,
            RiskFlag.last_active_at,
            RiskFlag.flagged_at,
            RiskFlag.outcome,
            RiskFlag.closed_at,
        )
        .join(Member, Member.id == RiskFlag.member_id)
        .where(RiskFlag.closed_at.is_(None))
        .order_by(RiskFlag.id.desc())
    )
    if reason is not None:
        query = query.where(RiskFlag.reason == reason)
    result = session.execute(query.execution_options(yield_per=5000))
    for row in result:
        yield (*row[:5], float(row[5]), *row[6:])
