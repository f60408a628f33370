"""Query parameters and response bodies of the analytics calls."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from loyalty.analytics.rules import MARK_NAMES, RISK_REASONS, SEGMENTS
from loyalty.analytics.service.cohorts import ACQUISITIONS, BASES, MAX_MONTHS
from loyalty.api import (
    PageQuerySchema,
    PageSchema,
    Timestamp,
    decimal_schema,
    positive_decimal_pattern,
)
from loyalty.ledger.schemas import Currency
from loyalty.members.rules import STAGES
from loyalty.tiers.rules import METRICS, WINDOWS


def _between(low: Decimal, high: Decimal) -> Any:
    """From ``low`` to ``high`` (a function, so the spec shows the bounds as the field's
    metadata gives them, as numbers)."""

    def check(value: Decimal) -> None:
        if not low <= value <= high:
            raise ValidationError(f"Must be from {low} to {high}.")

    return check


MIN_DAY = dt.date(1900, 1, 1)
MAX_DAY = dt.date(9998, 12, 31)
MAX_THRESHOLD = 10**12
CODE = validate.Length(min=1, max=32)


def rate(
    description: str = "A share from 0 to 1 (4 places); null when nothing to measure",
) -> fields.Float:
    return fields.Float(required=True, allow_none=True, metadata={"description": description})


# Days of the years 1900 to 9998, as the spec tells clients.
DAY_PATTERN = (
    r"^(19[0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
    r"-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
)


def _day(name: str, description: str) -> fields.Date:
    return fields.Date(
        data_key=name,
        validate=validate.Range(min=MIN_DAY, max=MAX_DAY),
        metadata={"description": description, "pattern": DAY_PATTERN},
    )


class PeriodQuerySchema(Schema):
    first = _day("from", "First day of the period (YYYY-MM-DD, the programme's time zone)")
    last = _day("to", "Last day of the period, included (default today)")

    @validates_schema
    def _order(self, data: dict[str, Any], **kwargs: Any) -> None:
        first, last = data.get("first"), data.get("last")
        if first and last and first > last:
            raise ValidationError("Must not be after to.", "from")


class MoneyQuerySchema(PeriodQuerySchema):
    currency = Currency(description="Money in this currency (default the analytics currency)")


class CohortQuerySchema(PeriodQuerySchema):
    basis = fields.String(
        load_default="enrollment",
        validate=validate.OneOf(BASES),
        metadata={"description": "Group members by the month they joined or first ordered"},
    )
    tier = fields.String(validate=CODE, metadata={"description": "Tier held at joining"})
    acquisition = fields.String(
        validate=validate.OneOf(ACQUISITIONS), metadata={"description": "referred or direct"}
    )
    channel = fields.String(
        validate=validate.Length(min=1, max=40),
        metadata={"description": "Channel of the API client that enrolled the member"},
    )
    months = fields.Integer(
        load_default=12,
        validate=validate.Range(min=1, max=MAX_MONTHS),
        metadata={"description": "Columns of the monthly matrix (1 to 60)"},
    )


class TierQuerySchema(Schema):
    tier = fields.String(validate=CODE, metadata={"description": "Only members of this tier now"})


class NpsQuerySchema(PeriodQuerySchema):
    tier = fields.String(validate=CODE, metadata={"description": "Only members of this tier now"})
    segment = fields.String(validate=validate.OneOf(SEGMENTS))


class AtRiskQuerySchema(PeriodQuerySchema, PageQuerySchema):
    reason = fields.String(validate=validate.OneOf(RISK_REASONS))


class UpliftQuerySchema(Schema):
    currency = Currency(description="Money in this currency (default the analytics currency)")


# --- cohorts -------------------------------------------------------------------------------


class MarkSchema(Schema):
    mark = fields.String(required=True, validate=validate.OneOf(MARK_NAMES))
    days = fields.List(
        fields.Integer(), required=True, metadata={"description": "First and last day counted"}
    )
    eligible = fields.Integer(
        required=True, metadata={"description": "Members whose last day of the mark is over"}
    )
    retained = fields.Integer(required=True, metadata={"description": "Of those, active in it"})
    rate = rate("retained / eligible; null while no member is past the mark")
    status = fields.String(
        required=True,
        validate=validate.OneOf(("not_yet", "partial", "complete")),
        metadata={"description": "not_yet: the cohort is younger than the mark"},
    )


class MonthCellSchema(Schema):
    month = fields.String(required=True)
    offset = fields.Integer(required=True, metadata={"description": "Months since joining"})
    active = fields.Integer(
        required=True, allow_none=True, metadata={"description": "null: the month has not begun"}
    )
    rate = rate()


class CohortSchema(Schema):
    cohort = fields.String(required=True, metadata={"description": "YYYY-MM"})
    members = fields.Integer(required=True)
    marks = fields.List(fields.Nested(MarkSchema), required=True)
    months = fields.List(fields.Nested(MonthCellSchema), required=True)


class HeadlineValueSchema(Schema):
    members = fields.Integer(required=True)
    retained = fields.Integer(required=True)
    rate = rate()


class HeadlineSchema(Schema):
    current = fields.Nested(HeadlineValueSchema, required=True)
    week_ago = fields.Nested(HeadlineValueSchema, required=True)
    month_ago = fields.Nested(HeadlineValueSchema, required=True)


class CohortsSchema(Schema):
    basis = fields.String(required=True)
    first = fields.Date(required=True, data_key="from")
    last = fields.Date(required=True, data_key="to")
    headline = fields.Nested(
        HeadlineSchema,
        required=True,
        metadata={"description": "30-day retention of the members who joined 60 to 30 days before"},
    )
    cohorts = fields.List(fields.Nested(CohortSchema), required=True)


# --- repurchase and LTV --------------------------------------------------------------------


class WindowRateSchema(Schema):
    first_buyers = fields.Integer(required=True)
    eligible = fields.Integer(required=True)
    repurchased = fields.Integer(required=True)
    rate = rate()


class RepurchaseSchema(Schema):
    first = fields.Date(required=True, data_key="from")
    last = fields.Date(required=True, data_key="to")
    currency = fields.String(required=True)
    buyers = fields.Integer(required=True)
    repeat_buyers = fields.Integer(required=True)
    repurchase_rate = rate()
    orders = fields.Integer(required=True)
    repurchase_frequency = fields.Float(required=True, allow_none=True)
    revenue = fields.Integer(required=True, metadata={"description": "Minor units, net of refunds"})
    repeat_revenue = fields.Integer(required=True)
    repeat_revenue_share = rate()
    average_order_value = fields.Float(required=True, allow_none=True)
    repeat_buyers_average_order_value = fields.Float(required=True, allow_none=True)
    repurchase_72_hours = fields.Nested(WindowRateSchema, required=True)
    repurchase_annual = fields.Nested(WindowRateSchema, required=True)


class LtvCohortSchema(Schema):
    cohort = fields.String(required=True)
    members = fields.Integer(required=True)
    orders = fields.Integer(required=True)
    revenue = fields.Integer(required=True)
    revenue_per_member = fields.Float(required=True, allow_none=True)


class LtvEstimateSchema(Schema):
    average_order_value = fields.Float(required=True, allow_none=True)
    orders_per_buyer_per_year = fields.Float(required=True, allow_none=True)
    annual_buyer_retention = rate()
    expected_years = fields.Float(required=True, allow_none=True)
    lifetime_value = fields.Float(required=True, allow_none=True)


class LtvSchema(Schema):
    first = fields.Date(required=True, data_key="from")
    last = fields.Date(required=True, data_key="to")
    currency = fields.String(required=True)
    members = fields.Integer(required=True)
    revenue = fields.Integer(required=True)
    revenue_per_member = fields.Float(required=True, allow_none=True)
    cohorts = fields.List(fields.Nested(LtvCohortSchema), required=True)
    estimate = fields.Nested(LtvEstimateSchema, required=True)


# --- segments, members, at risk ------------------------------------------------------------


class StageCountSchema(Schema):
    stage = fields.String(required=True)
    members = fields.Integer(required=True)
    share = rate()


class SegmentCountSchema(Schema):
    segment = fields.String(
        required=True, allow_none=True, metadata={"description": "null: no order yet"}
    )
    members = fields.Integer(required=True)
    share = rate()


class GridCellSchema(Schema):
    recency = fields.Integer(required=True)
    frequency = fields.Integer(required=True)
    members = fields.Integer(required=True)


class SegmentsSchema(Schema):
    computed_at = Timestamp(required=True, allow_none=True)
    members = fields.Integer(required=True)
    stages = fields.List(fields.Nested(StageCountSchema), required=True)
    segments = fields.List(fields.Nested(SegmentCountSchema), required=True)
    rfm_grid = fields.List(fields.Nested(GridCellSchema), required=True)


class FlagSchema(Schema):
    id = fields.String(required=True)
    member_id = fields.String(required=True)
    external_id = fields.String()
    reason = fields.String(required=True, validate=validate.OneOf(RISK_REASONS))
    recent_activity = fields.Integer(required=True, metadata={"description": "Last 30 days"})
    baseline_activity = fields.Float(
        required=True, metadata={"description": "The 90 days before, per 30 days"}
    )
    last_active_at = Timestamp(required=True, allow_none=True)
    flagged_at = Timestamp(required=True)
    outcome = fields.String(required=True, allow_none=True)
    closed_at = Timestamp(required=True, allow_none=True)


class AtRiskSchema(PageSchema):
    first = fields.Date(required=True, data_key="from")
    last = fields.Date(required=True, data_key="to")
    open = fields.Integer(required=True, metadata={"description": "Members at risk now"})
    raised = fields.Integer(required=True, metadata={"description": "Flags raised in the period"})
    won_back = fields.Integer(required=True)
    win_back_rate = rate("Won back within 30 days, of the period's flags whose 30 days are over")
    churned = fields.Integer(required=True)
    precision = rate("Churned, of the period's flags whose outcome is known")
    items = fields.List(fields.Nested(FlagSchema), required=True)


class StageChangeSchema(Schema):
    from_stage = fields.String(required=True, allow_none=True)
    to_stage = fields.String(required=True)
    from_segment = fields.String(required=True, allow_none=True)
    to_segment = fields.String(required=True, allow_none=True)
    at = Timestamp(required=True)


class MemberAnalyticsSchema(Schema):
    member_id = fields.String(required=True)
    stage = fields.String(required=True, allow_none=True, validate=validate.OneOf(STAGES))
    stage_since = Timestamp(required=True, allow_none=True)
    segment = fields.String(required=True, allow_none=True)
    recency = fields.Integer(required=True, allow_none=True)
    frequency = fields.Integer(required=True, allow_none=True)
    monetary = fields.Integer(required=True, allow_none=True)
    last_active_at = Timestamp(required=True, allow_none=True)
    computed_at = Timestamp(required=True, allow_none=True)
    risk = fields.Nested(FlagSchema, required=True, allow_none=True)
    history = fields.List(fields.Nested(StageChangeSchema), required=True)


# --- NPS -----------------------------------------------------------------------------------


class NpsScoreSchema(Schema):
    responses = fields.Integer(required=True)
    promoters = fields.Integer(required=True)
    passives = fields.Integer(required=True)
    detractors = fields.Integer(required=True)
    nps = fields.Float(required=True, allow_none=True, metadata={"description": "-100 to 100"})


class NpsGroupSchema(NpsScoreSchema):
    key = fields.String(required=True, allow_none=True)


class NpsSchema(NpsScoreSchema):
    first = fields.Date(required=True, data_key="from")
    last = fields.Date(required=True, data_key="to")
    by_tier = fields.List(fields.Nested(NpsGroupSchema), required=True)
    by_segment = fields.List(fields.Nested(NpsGroupSchema), required=True)
    by_cohort = fields.List(fields.Nested(NpsGroupSchema), required=True)
    by_month = fields.List(fields.Nested(NpsGroupSchema), required=True)


# --- uplift --------------------------------------------------------------------------------


class GroupSchema(Schema):
    members = fields.Integer(required=True)
    buyers = fields.Integer(required=True)
    purchase_rate = rate()
    revenue = fields.Integer(required=True)
    spend_per_member = fields.Float(required=True, allow_none=True)
    points = fields.Integer(required=True)


class IntervalSchema(Schema):
    difference = fields.Float(required=True)
    low = fields.Float(required=True)
    high = fields.Float(required=True)
    confidence = fields.Float(required=True)


class UpliftSchema(Schema):
    campaign_id = fields.String(required=True)
    name = fields.String(required=True)
    starts_at = Timestamp(required=True)
    ends_at = Timestamp(required=True)
    measured_until = Timestamp(required=True)
    holdout_pct = fields.Integer(required=True)
    currency = fields.String(required=True)
    treated = fields.Nested(GroupSchema, required=True)
    held_out = fields.Nested(GroupSchema, required=True)
    purchase_rate_uplift = fields.Nested(IntervalSchema, required=True, allow_none=True)
    spend_per_member_uplift = fields.Nested(IntervalSchema, required=True, allow_none=True)
    incremental_revenue = fields.Float(required=True, allow_none=True)
    points_cost = fields.Float(required=True, metadata={"description": "Minor units"})
    return_on_cost = fields.Float(required=True, allow_none=True)


# --- KPIs and liability --------------------------------------------------------------------


class MoneySchema(Schema):
    amount = fields.String(required=True, metadata={"description": "Decimal, major units"})
    currency = fields.String(required=True)


class PointsMoneySchema(Schema):
    points = fields.Integer(required=True)
    money = fields.Nested(MoneySchema, required=True)


class PointsKpisSchema(Schema):
    issued = fields.Nested(PointsMoneySchema, required=True)
    reversed = fields.Nested(PointsMoneySchema, required=True)
    redeemed = fields.Nested(PointsMoneySchema, required=True)
    expired = fields.Nested(PointsMoneySchema, required=True)
    adjusted = fields.Nested(PointsMoneySchema, required=True)
    outstanding = fields.Nested(PointsMoneySchema, required=True)


class TierCountSchema(Schema):
    tier = fields.String(required=True, allow_none=True)
    members = fields.Integer(required=True)


class TierKpisSchema(Schema):
    distribution = fields.List(fields.Nested(TierCountSchema), required=True)
    movement = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)


class ReferralKpisSchema(Schema):
    referrals = fields.Integer(required=True)
    qualified = fields.Integer(required=True)
    conversion_rate = rate()


class ClaimKpisSchema(Schema):
    claims = fields.Integer(required=True)
    points = fields.Integer(required=True)
    used = fields.Integer(required=True)


class KpisSchema(Schema):
    first = fields.Date(required=True, data_key="from")
    last = fields.Date(required=True, data_key="to")
    members = fields.Integer(required=True)
    new_members = fields.Integer(required=True)
    active_members = fields.Integer(required=True)
    active_rate = rate()
    points = fields.Nested(PointsKpisSchema, required=True)
    redemption_rate = rate("Redeemed / issued in the period")
    breakage_rate = rate("Expired / (redeemed + expired) in the period")
    tiers = fields.Nested(TierKpisSchema, required=True)
    referrals = fields.Nested(ReferralKpisSchema, required=True)
    reward_claims = fields.Nested(ClaimKpisSchema, required=True)
    badge_awards = fields.Integer(required=True)
    community_monthly_active = fields.Integer(required=True)
    community_monthly_active_rate = rate()


class ExpiringMonthSchema(Schema):
    month = fields.String(required=True)
    points = fields.Integer(required=True)


class LiabilitySchema(Schema):
    as_of = Timestamp(required=True)
    currency = fields.String(required=True)
    cost_per_point = fields.String(required=True)
    outstanding = fields.Nested(PointsMoneySchema, required=True)
    available = fields.Nested(PointsMoneySchema, required=True)
    pending = fields.Nested(PointsMoneySchema, required=True)
    held = fields.Nested(PointsMoneySchema, required=True)
    debt = fields.Nested(PointsMoneySchema, required=True)
    expiring = fields.List(fields.Nested(ExpiringMonthSchema), required=True)
    never_expiring = fields.Integer(required=True)


# --- alerts --------------------------------------------------------------------------------


class AlertSchema(Schema):
    id = fields.String(required=True)
    metric = fields.String(required=True)
    compared_with = fields.String(required=True, metadata={"description": "week or month"})
    day = fields.Date(required=True)
    current_rate = fields.Float(required=True)
    previous_rate = fields.Float(required=True)
    drop_points = fields.Float(required=True)
    members = fields.Integer(required=True)
    created_at = Timestamp(required=True)


class AlertsSchema(PageSchema):
    headline = fields.Nested(HeadlineSchema, required=True)
    threshold_points = fields.Float(required=True)
    items = fields.List(fields.Nested(AlertSchema), required=True)


# --- tier what-if --------------------------------------------------------------------------


class WhatIfCreateSchema(Schema):
    thresholds = fields.Dict(
        keys=fields.String(validate=CODE),
        values=fields.Integer(strict=True, validate=validate.Range(min=0, max=MAX_THRESHOLD)),
        metadata={"description": "Proposed threshold by tier code (others keep theirs)"},
    )
    metric = fields.String(validate=validate.OneOf(METRICS))
    window = fields.String(validate=validate.OneOf(WINDOWS))


class WhatIfTierSchema(Schema):
    tier = fields.String(required=True, allow_none=True)
    threshold = fields.Integer(required=True, allow_none=True)
    members_now = fields.Integer(required=True)
    members_proposed = fields.Integer(required=True)


class MoverSchema(Schema):
    member_id = fields.String(required=True)
    external_id = fields.String(required=True)
    from_tier = fields.String(required=True, allow_none=True)
    to_tier = fields.String(required=True, allow_none=True)
    metric_value = fields.Integer(required=True)
    direction = fields.String(required=True, validate=validate.OneOf(("up", "down")))


class WhatIfSchema(PageSchema):
    metric = fields.String(required=True)
    window = fields.String(required=True)
    tiers = fields.List(fields.Nested(WhatIfTierSchema), required=True)
    moving_up = fields.Integer(required=True)
    moving_down = fields.Integer(required=True)
    items = fields.List(fields.Nested(MoverSchema), required=True)


# --- settings ------------------------------------------------------------------------------


class AnalyticsSettingsSchema(Schema):
    new_days = fields.Integer(required=True)
    active_days = fields.Integer(required=True)
    silent_days = fields.Integer(required=True)
    risk_drop_pct = fields.Integer(required=True)
    rfm_days = fields.Integer(required=True)
    currency = fields.String(required=True)
    cost_per_point = fields.Decimal(required=True, as_string=True, metadata={"type": "string"})
    alert_drop_points = fields.Decimal(required=True, as_string=True, metadata={"type": "string"})
    computed_at = Timestamp(required=True, allow_none=True)
    updated_at = Timestamp(required=True)


class AnalyticsSettingsUpdateSchema(Schema):
    new_days = fields.Integer(strict=True, validate=validate.Range(min=1, max=365))
    active_days = fields.Integer(strict=True, validate=validate.Range(min=1, max=3649))
    silent_days = fields.Integer(strict=True, validate=validate.Range(min=2, max=3650))
    risk_drop_pct = fields.Integer(strict=True, validate=validate.Range(min=1, max=100))
    rfm_days = fields.Integer(strict=True, validate=validate.Range(min=30, max=3650))
    currency = Currency()
    cost_per_point = fields.Decimal(
        places=6,
        allow_nan=False,
        validate=_between(Decimal(0), Decimal(10**5)),
        metadata={
            "description": 'Money per point in major units, 0 to 100000, e.g. "0.01" '
            "(a string in responses)",
            **decimal_schema(r"^[0-9]{1,5}(\.[0-9]{1,6})?$|^100000(\.0{1,6})?$", 0, 10**5),
        },
    )
    alert_drop_points = fields.Decimal(
        places=2,
        allow_nan=False,
        validate=_between(Decimal("0.01"), Decimal(100)),
        metadata={
            "description": 'Percentage points, 0.01 to 100, e.g. "5" (a string in responses)',
            **decimal_schema(positive_decimal_pattern(2), 0.01, 100),
        },
    )
