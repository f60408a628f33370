"""Analytics: cohorts, repurchase, LTV, segments, at-risk members, NPS, campaign uplift, KPIs,
liability, alerts and the tier what-if (scope ``analytics:read``; each GET also as CSV with
``Accept: text/csv``), and the analytics settings (``program:read`` / ``program:write``)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, g, request
from flask.views import MethodView
from marshmallow import Schema
from sqlalchemy.orm import Session, sessionmaker

from loyalty.analytics import export, service
from loyalty.analytics.models import AnalyticsSettings
from loyalty.analytics.schemas import (
    AlertSchema,
    AlertsSchema,
    AnalyticsSettingsSchema,
    AnalyticsSettingsUpdateSchema,
    AtRiskQuerySchema,
    AtRiskSchema,
    CohortQuerySchema,
    CohortsSchema,
    KpisSchema,
    LiabilitySchema,
    LtvSchema,
    MemberAnalyticsSchema,
    MoneyQuerySchema,
    NpsQuerySchema,
    NpsSchema,
    PeriodQuerySchema,
    RepurchaseSchema,
    SegmentsSchema,
    TierQuerySchema,
    UpliftQuerySchema,
    UpliftSchema,
    WhatIfCreateSchema,
    WhatIfSchema,
)
from loyalty.api import Blueprint, PageQuerySchema
from loyalty.auth.security import current_principal
from loyalty.db import get_session, make_engine

blp = Blueprint("analytics", __name__, url_prefix="/v1", description="Retention analytics")
READ = "analytics:read"
CSV_CONTENT = {200: {"content": {export.CSV_TYPE: {"schema": {"type": "string"}}}}}
_REPLICA = "loyalty.analytics_replica"


def _session() -> Session:
    """The session analytics reads with: on ``LOYALTY_ANALYTICS_DATABASE_URL`` (a replica)
    when it is set, else the request's own."""
    url = current_app.config.get("ANALYTICS_DATABASE_URL")
    if not url:
        return get_session()
    session: Session | None = g.get("_loyalty_analytics_session")
    if session is None:
        factory = current_app.extensions.get(_REPLICA)
        if factory is None:
            factory = sessionmaker(bind=make_engine(url), expire_on_commit=False)
            current_app.extensions[_REPLICA] = factory
        session = factory()
        g._loyalty_analytics_session = session
    return session


@blp.teardown_app_request
def _close_replica_session(_exc: BaseException | None) -> None:
    session: Session | None = g.pop("_loyalty_analytics_session", None)
    if session is not None:
        session.close()


def as_csv(
    schema: type[Schema],
    render: Callable[[dict[str, Any], dict[str, Any]], Any] | None = None,
    *,
    name: str,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Answer ``Accept: text/csv`` with the view's result as CSV: dumped by ``schema`` (so the
    figures are those of the JSON), then rendered by ``render`` (default `export.figures`)."""

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(func)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not export.wants_csv():
                return func(self, *args, **kwargs)
            result = func(self, *args, **kwargs)
            document = schema().dump(result)
            if render is not None:
                return render(document, result)
            return export.figures(document, name)

        return blp.doc(responses=CSV_CONTENT)(wrapper)

    return decorator


@blp.route("/analytics/cohorts")
class Cohorts(MethodView):
    @blp.requires(READ)
    @blp.arguments(CohortQuerySchema, location="query")
    @blp.response(200, CohortsSchema)
    @as_csv(CohortsSchema, lambda document, _: export.cohorts(document), name="cohorts")
    def get(self, query: dict[str, Any]) -> Any:
        """Retention by monthly cohort at day 1, 7, 30, 90 and year 1, 3, 5, and by month."""
        return service.cohort_retention(_session(), **query)


@blp.route("/analytics/repurchase")
class Repurchase(MethodView):
    @blp.requires(READ)
    @blp.arguments(MoneyQuerySchema, location="query")
    @blp.response(200, RepurchaseSchema)
    @as_csv(RepurchaseSchema, name="repurchase")
    def get(self, query: dict[str, Any]) -> Any:
        """Repurchase rate, 72-hour and annual repurchase, frequency, revenue share, AOV."""
        return service.repurchase(_session(), **query)


@blp.route("/analytics/ltv")
class LifetimeValue(MethodView):
    @blp.requires(READ)
    @blp.arguments(MoneyQuerySchema, location="query")
    @blp.response(200, LtvSchema)
    @as_csv(LtvSchema, name="ltv")
    def get(self, query: dict[str, Any]) -> Any:
        """Revenue per member to date and per cohort, and the lifetime value estimate."""
        return service.lifetime_value(_session(), **query)


@blp.route("/analytics/segments")
class Segments(MethodView):
    @blp.requires(READ)
    @blp.arguments(TierQuerySchema, location="query")
    @blp.response(200, SegmentsSchema)
    @as_csv(SegmentsSchema, name="segments")
    def get(self, query: dict[str, Any]) -> Any:
        """Members by lifecycle stage and RFM segment, and the RFM grid (as last computed)."""
        return service.segments(_session(), **query)


@blp.route("/analytics/members/<string:member_id>")
class MemberAnalytics(MethodView):
    @blp.requires(READ)
    @blp.response(200, MemberAnalyticsSchema)
    @blp.errors(404)
    def get(self, member_id: str) -> Any:
        """A member's stage, RFM scores, segment, churn flag and stage history."""
        return service.member_analytics(_session(), member_id)


def _at_risk_csv(document: dict[str, Any], result: dict[str, Any]) -> Any:
    # The reason filter, already checked by AtRiskQuerySchema.
    rows = service.all_open_flags(_session(), reason=request.args.get("reason"))
    return export.rows(list(service.FLAG_COLUMNS), rows, "at-risk")


@blp.route("/analytics/at-risk")
class AtRisk(MethodView):
    @blp.requires(READ)
    @blp.arguments(AtRiskQuerySchema, location="query")
    @blp.response(200, AtRiskSchema)
    @as_csv(AtRiskSchema, _at_risk_csv, name="at-risk")
    def get(self, query: dict[str, Any]) -> Any:
        """Members at risk now (a page), flags raised in the period, win-back rate, precision."""
        return service.at_risk(_session(), **query)


@blp.route("/analytics/nps")
class Nps(MethodView):
    @blp.requires(READ)
    @blp.arguments(NpsQuerySchema, location="query")
    @blp.response(200, NpsSchema)
    @as_csv(NpsSchema, name="nps")
    def get(self, query: dict[str, Any]) -> Any:
        """Net promoter score overall and by tier, segment, cohort and month."""
        return service.nps(_session(), **query)


@blp.route("/analytics/campaigns/<string:campaign_id>/uplift")
class Uplift(MethodView):
    @blp.requires(READ)
    @blp.arguments(UpliftQuerySchema, location="query")
    @blp.response(200, UpliftSchema)
    @blp.errors(404)
    @as_csv(UpliftSchema, name="uplift")
    def get(self, query: dict[str, Any], campaign_id: str) -> Any:
        """Treated vs held-out members: purchase rate, spend, points, uplift and return."""
        return service.uplift(_session(), campaign_id=campaign_id, **query)


@blp.route("/analytics/kpis")
class Kpis(MethodView):
    @blp.requires(READ)
    @blp.arguments(PeriodQuerySchema, location="query")
    @blp.response(200, KpisSchema)
    @as_csv(KpisSchema, name="kpis")
    def get(self, query: dict[str, Any]) -> Any:
        """Programme KPIs over the period: members, points, tiers, referrals, claims, badges."""
        return service.kpis(_session(), **query)


@blp.route("/analytics/liability")
class Liability(MethodView):
    @blp.requires(READ)
    @blp.response(200, LiabilitySchema)
    @as_csv(LiabilitySchema, name="liability")
    def get(self) -> Any:
        """What the programme owes now, in points and money, and when it expires."""
        return service.liability(_session())


def _alerts_csv(document: dict[str, Any], result: dict[str, Any]) -> Any:
    columns = list(AlertSchema().fields)
    every = service.list_alerts(_session(), limit=10**9)
    return export.records((AlertSchema().dump(item) for item in every["items"]), columns, "alerts")


@blp.route("/analytics/alerts")
class Alerts(MethodView):
    @blp.requires(READ)
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, AlertsSchema)
    @as_csv(AlertsSchema, _alerts_csv, name="alerts")
    def get(self, query: dict[str, Any]) -> Any:
        """Retention alerts, newest first, and the 30-day retention headline."""
        return service.list_alerts(_session(), **query)


@blp.route("/analytics/tier-what-if")
class TierWhatIf(MethodView):
    @blp.requires(READ)
    @blp.arguments(WhatIfCreateSchema)
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, WhatIfSchema)
    def post(self, proposal: dict[str, Any], query: dict[str, Any]) -> Any:
        """Simulate tier thresholds (or a policy) on today's data; nothing is saved."""
        return service.tier_what_if(_session(), **proposal, **query)


@blp.route("/program/analytics")
class Settings(MethodView):
    @blp.requires("program:read")
    @blp.response(200, AnalyticsSettingsSchema)
    def get(self) -> AnalyticsSettings:
        """Get the analytics settings: stage thresholds, churn drop, currency, cost per point."""
        return service.get_settings(get_session())

    @blp.requires("program:write")
    @blp.arguments(AnalyticsSettingsUpdateSchema)
    @blp.response(200, AnalyticsSettingsSchema)
    def patch(self, changes: dict[str, Any]) -> AnalyticsSettings:
        """Change the analytics settings (stages are recomputed by the next job run)."""
        return service.update_settings(
            get_session(), changes=changes, actor=current_principal().client_id
        )
