"""Analytics' services, one module per topic; the public names are re-exported here.

- `settings`: the thresholds and money settings managers set;
- `activity`: the cohort activity the worker keeps for the cohort reports;
- `facts`: the order facts the worker keeps for repurchase and lifetime value;
- `cohorts`: cohort retention and the monthly matrix, the 30-day headline;
- `purchases`: repurchase and lifetime value;
- `stages`: the worker's daily recomputation of stages, RFM segments and churn flags, and the
  live stage campaigns ask for;
- `segments`: reports on stages and segments, one member's analytics, the at-risk list;
- `nps`, `uplift`, `kpis` (KPIs and liability), `alerts`, `whatif`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.analytics.models import AnalyticsSettings
from loyalty.analytics.service.activity import refresh as refresh_cohort_activity
from loyalty.analytics.service.alerts import check_retention, list_alerts
from loyalty.analytics.service.cohorts import cohort_retention, retention_headline
from loyalty.analytics.service.facts import refresh as refresh_order_facts
from loyalty.analytics.service.kpis import kpis, liability
from loyalty.analytics.service.nps import nps
from loyalty.analytics.service.purchases import lifetime_value, repurchase
from loyalty.analytics.service.segments import (
    FLAG_COLUMNS,
    all_open_flags,
    at_risk,
    member_analytics,
    segments,
)
from loyalty.analytics.service.settings import get_settings, update_settings
from loyalty.analytics.service.stages import LOCK_COMPANION, recompute, stage_of
from loyalty.analytics.service.uplift import uplift
from loyalty.analytics.service.whatif import tier_what_if
from loyalty.db import unit_of_work

__all__ = [
    "FLAG_COLUMNS",
    "all_open_flags",
    "at_risk",
    "check_retention",
    "cohort_retention",
    "get_settings",
    "kpis",
    "liability",
    "lifetime_value",
    "list_alerts",
    "member_analytics",
    "nps",
    "recompute",
    "refresh_cohort_activity",
    "refresh_order_facts",
    "repurchase",
    "retention_headline",
    "run_due",
    "segments",
    "LOCK_COMPANION",
    "stage_of",
    "tier_what_if",
    "update_settings",
    "uplift",
]

# Stages, segments, flags and alerts are recomputed once this long after the last time.
RECOMPUTE_EVERY = dt.timedelta(days=1)
# Members per unit of work of the recomputation (each batch is a handful of statements).
RECOMPUTE_BATCH = 10_000


def run_due(session: Session, *, batch_size: int = 1000) -> dict[str, int]:
    """The job's share (``loyalty jobs run``): once a day, recompute every member's stage,
    RFM segment and churn flags, bring the cohort activity and the order facts up to date,
    then check retention for alerts. The pass is claimed on the settings row (``FOR UPDATE
    SKIP LOCKED``), so of several workers one does it."""
    now = clock.now()
    with unit_of_work(session):
        query = select(AnalyticsSettings).where(AnalyticsSettings.id == 1)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        settings = session.scalar(query)
        due = settings is not None and (
            settings.computed_at is None or now - settings.computed_at >= RECOMPUTE_EVERY
        )
        if settings is not None and due:
            settings.computed_at = now
    if not due:
        return {"stages computed": 0, "retention alerts": 0}
    counts = {
        "stages computed": 0,
        "stages changed": 0,
        "members flagged at risk": 0,
        "at-risk flags closed": 0,
    }
    counts.update(recompute(session, now=now, batch_size=max(batch_size, RECOMPUTE_BATCH)))
    counts.update(refresh_cohort_activity(session, now=now))
    counts.update(refresh_order_facts(session, now=now))
    counts["retention alerts"] = check_retention(session, now=now)
    return counts
