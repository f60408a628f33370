"""Net promoter score from ``nps.responded`` engagement events (score 0-10): each member's
latest answer in the period counts once; overall and by tier, segment, cohort and month."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.analytics import rules
from loyalty.analytics.models import MemberStage
from loyalty.analytics.service._sql import Dialect, base_tier, period
from loyalty.community import reporting as community
from loyalty.members.models import Member
from loyalty.tiers import reporting as tiers_reporting

DIMENSIONS = ("tier", "segment", "cohort", "month")


def _month(d: Dialect, day: Any) -> ColumnElement[str]:
    return func.to_char(day, "YYYY-MM") if d.postgresql else func.strftime("%Y-%m", day)


def nps(
    session: Session,
    *,
    first: dt.date | None = None,
    last: dt.date | None = None,
    tier: str | None = None,
    segment: str | None = None,
) -> dict[str, Any]:
    """NPS over the period (default the last 90 days), overall and by each of `DIMENSIONS`;
    optionally only members of a tier or a segment. Reads only."""
    d = Dialect(session)
    span = period(session, first, last, default_days=90)
    events = community.events().subquery()
    answers = (
        select(
            events.c.member_id,
            events.c.occurred_at,
            events.c.properties["score"].as_integer().label("score"),
            func.row_number()
            .over(partition_by=events.c.member_id, order_by=events.c.occurred_at.desc())
            .label("latest"),
        )
        .where(
            events.c.type == rules.NPS_EVENT,
            events.c.occurred_at >= span.start,
            events.c.occurred_at < span.end,
        )
        .subquery("answers")
    )
    tiers = tiers_reporting.member_tiers(clock.now()).subquery("tiers")
    tier_code = func.coalesce(tiers.c.code, literal(base_tier(session)))
    base = (
        select(
            answers.c.score,
            tier_code.label("tier"),
            MemberStage.segment.label("segment"),
            _month(d, d.local_date(Member.enrolled_at, Member.timezone)).label("cohort"),
            _month(d, d.local_date(answers.c.occurred_at, literal(span.timezone))).label("month"),
        )
        .select_from(answers)
        .join(Member, Member.id == answers.c.member_id)
        .outerjoin(tiers, tiers.c.member_id == answers.c.member_id)
        .outerjoin(MemberStage, MemberStage.member_id == answers.c.member_id)
        .where(answers.c.latest == 1, answers.c.score.between(rules.NPS_MIN, rules.NPS_MAX))
    )
    if tier is not None:
        base = base.where(tier_code == tier)
    if segment is not None:
        base = base.where(MemberStage.segment == segment)
    rows = base.subquery("nps_rows")
    counts = [
        func.count().label("responses"),
        func.coalesce(func.sum(case((rows.c.score >= 9, 1), else_=0)), 0).label("promoters"),
        func.coalesce(func.sum(case((rows.c.score.between(7, 8), 1), else_=0)), 0).label(
            "passives"
        ),
        func.coalesce(func.sum(case((rows.c.score <= 6, 1), else_=0)), 0).label("detractors"),
    ]
    overall = _score(session.execute(select(*counts)).one())
    result: dict[str, Any] = {"first": span.first, "last": span.last, **overall}
    for dimension in DIMENSIONS:
        column = rows.c[dimension]
        result[f"by_{dimension}"] = [
            {"key": row[0], **_score(row)}
            for row in session.execute(select(column, *counts).group_by(column).order_by(column))
        ]
    return result


def _score(row: Any) -> dict[str, Any]:
    responses, promoters = int(row.responses), int(row.promoters)
    passives, detractors = int(row.passives), int(row.detractors)
    return {
        "responses": responses,
        "promoters": promoters,
        "passives": passives,
        "detractors": detractors,
        "nps": rules.nps(promoters, detractors, responses),
    }
