"""Request and response bodies of the tier calls."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_dump, validate, validates

from loyalty import clock
from loyalty.api import (
    PageQuerySchema,
    PageSchema,
    Pattern,
    Timestamp,
    decimal_schema,
    free_text,
)
from loyalty.tiers.rules import CHANGE_KINDS, CODE_PATTERN, DOWNGRADE_MODES, METRICS, WINDOWS

MAX_THRESHOLD = 10**12
CODE = validate.Regexp(
    CODE_PATTERN, error="A slug: lower-case letters and digits, words joined by hyphens."
)
TEXT = free_text(blank=False)
STRIPE_PRICE = Pattern(r"^[A-Za-z0-9_]+$", error="A Stripe price id, e.g. price_1Q2w3E.")
DECIMAL_STRING = {"type": "string", "pattern": r"^\d+(\.\d+)?$"}
# 1 to below 100, at most 4 decimal places (as a string, or a JSON number).
MULTIPLIER = decimal_schema(r"^[1-9][0-9]?(\.[0-9]{1,4})?$", 1, 99.9999)


def _multiplier_range(value: Decimal) -> None:
    # A plain function, not validate.Range: apispec would write the decimal bounds as strings.
    if not Decimal(1) <= value < Decimal(100):
        raise ValidationError("Must be at least 1 and below 100.")


def _multiplier(**extra: Any) -> fields.Decimal:
    return fields.Decimal(
        places=4,
        as_string=True,
        allow_nan=False,
        validate=_multiplier_range,
        metadata={
            "description": "Points multiplier of the tier, 1 to below 100, with at most 4 "
            'decimal places, e.g. "1.25"',
            **MULTIPLIER,
        },
        **extra,
    )


def _stripe_price() -> fields.String:
    return fields.String(
        allow_none=True,
        validate=[validate.Length(min=1, max=255), STRIPE_PRICE],
        metadata={
            "description": "Make the tier paid: the Stripe price of its subscription "
            "(price_...); null: not paid"
        },
    )


def _threshold(description: str, **extra: Any) -> fields.Integer:
    return fields.Integer(
        strict=True,
        validate=validate.Range(min=0, max=MAX_THRESHOLD),
        metadata={"description": description},
        **extra,
    )


class TierSchema(Schema):
    code = fields.String(required=True)
    name = fields.String(required=True)
    rank = fields.Integer(required=True)
    threshold = fields.Integer(
        required=True, metadata={"description": "Metric value that reaches the tier"}
    )
    retain_threshold = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "Metric value that keeps the tier at review (null: threshold)"},
    )
    benefits = fields.String(required=True, allow_none=True)
    points_multiplier = fields.Decimal(
        required=True, places=4, as_string=True, metadata=DECIMAL_STRING
    )
    stripe_price_id = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "A paid tier's Stripe price (members subscribe to it), or null"},
    )
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class TierListSchema(Schema):
    items = fields.List(fields.Nested(TierSchema), required=True)


class TierCreateSchema(Schema):
    code = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=32), CODE],
        metadata={"description": "Immutable slug, e.g. gold"},
    )
    name = fields.String(required=True, validate=[validate.Length(min=1, max=100), TEXT])
    rank = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=0, max=1000),
        metadata={"description": "Position on the ladder; higher is better; unique"},
    )
    threshold = _threshold(
        "Metric value (points, major currency units or orders) that reaches the tier",
        required=True,
    )
    retain_threshold = _threshold(
        "Metric value that keeps the tier at review, at most the threshold; default the threshold",
        allow_none=True,
    )
    benefits = fields.String(validate=validate.Length(max=2000), allow_none=True)
    points_multiplier = _multiplier()
    stripe_price_id = _stripe_price()


class TierUpdateSchema(Schema):
    name = fields.String(validate=[validate.Length(min=1, max=100), TEXT])
    rank = fields.Integer(strict=True, validate=validate.Range(min=0, max=1000))
    threshold = _threshold("Metric value that reaches the tier")
    retain_threshold = _threshold(
        "Metric value that keeps the tier at review; null: the threshold", allow_none=True
    )
    benefits = fields.String(validate=validate.Length(max=2000), allow_none=True)
    points_multiplier = _multiplier()
    stripe_price_id = _stripe_price()


class PolicySchema(Schema):
    metric = fields.String(required=True, validate=validate.OneOf(METRICS))
    window = fields.String(required=True, validate=validate.OneOf(WINDOWS))
    grace_days = fields.Integer(required=True)
    downgrade = fields.String(required=True, validate=validate.OneOf(DOWNGRADE_MODES))
    ladder_version = fields.Integer(
        required=True,
        metadata={
            "description": "Goes up with every ladder or policy change that the job "
            "applies to members"
        },
    )
    updated_at = Timestamp(required=True)
    updated_by = fields.String(required=True, allow_none=True)


class PolicyUpdateSchema(Schema):
    metric = fields.String(
        validate=validate.OneOf(METRICS),
        metadata={"description": "points (earned), spend (major currency units) or orders"},
    )
    window = fields.String(validate=validate.OneOf(WINDOWS))
    grace_days = fields.Integer(
        strict=True,
        validate=validate.Range(min=0, max=365),
        metadata={"description": "Days after a period ends before its review"},
    )
    downgrade = fields.String(
        validate=validate.OneOf(DOWNGRADE_MODES),
        metadata={
            "description": "one_step: down one rank per review; recompute: straight to "
            "the tier the metric qualifies for"
        },
    )


class AssignmentSchema(Schema):
    tier = fields.String(
        required=True,
        validate=validate.Length(min=1, max=32),
        metadata={"description": "Code of the tier to give"},
    )
    reason = fields.String(required=True, validate=[validate.Length(min=1, max=500), TEXT])
    until = Timestamp(
        allow_none=True,
        metadata={
            "description": "When the assignment ends, in the future; default never (end it by "
            "DELETE)"
        },
    )

    @validates("until")
    def _in_future(self, value: Any, **_: Any) -> None:
        if value is not None and value <= clock.now():
            raise ValidationError("Must be in the future.")


class HeldTierSchema(Schema):
    code = fields.String(required=True)
    name = fields.String(required=True)
    rank = fields.Integer(required=True)
    benefits = fields.String(required=True, allow_none=True)
    points_multiplier = fields.Decimal(
        required=True, places=4, as_string=True, metadata=DECIMAL_STRING
    )


class TierNameSchema(Schema):
    code = fields.String(required=True)
    name = fields.String(required=True)


class ProgressSchema(Schema):
    next_tier = fields.Nested(TierNameSchema, required=True)
    metric = fields.String(required=True, validate=validate.OneOf(METRICS))
    current = fields.Integer(required=True)
    threshold = fields.Integer(required=True)
    remaining = fields.Integer(required=True)
    deadline = fields.Date(
        required=True,
        allow_none=True,
        metadata={"description": "Last day that counts (calendar_year window), else null"},
    )
    message = fields.String(required=True, metadata={"example": "240 more points to Gold"})


class MemberTierSchema(Schema):
    member_id = fields.String(required=True)
    tier = fields.Nested(HeldTierSchema, required=True, allow_none=True)
    source = fields.String(
        required=True, allow_none=True, validate=validate.OneOf(["computed", "manual", "paid"])
    )
    since = Timestamp(required=True, allow_none=True)
    until = Timestamp(
        required=True,
        allow_none=True,
        metadata={
            "description": "Review date (computed), end of the manual assignment or of the "
            "paid period"
        },
    )
    reason = fields.String(
        required=True, allow_none=True, metadata={"description": "Manual assignment's reason"}
    )
    metric = fields.String(required=True, validate=validate.OneOf(METRICS))
    window = fields.String(required=True, validate=validate.OneOf(WINDOWS))
    value = fields.Integer(
        required=True, metadata={"description": "The metric in the window running now"}
    )
    progress = fields.Nested(
        ProgressSchema,
        required=True,
        allow_none=True,
        metadata={"description": "Progress to the next tier; null at the top"},
    )


class TierChangeSchema(Schema):
    id = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(CHANGE_KINDS))
    from_ = fields.String(
        data_key="from", required=True, allow_none=True, metadata={"description": "Tier code"}
    )
    to = fields.String(required=True, allow_none=True, metadata={"description": "Tier code"})
    metric_value = fields.Integer(required=True, allow_none=True)
    reason = fields.String(required=True, allow_none=True)
    at = Timestamp(required=True)
    actor = fields.String(required=True, allow_none=True)

    @pre_dump
    def _from_change(self, change: Any, **_: Any) -> dict[str, Any]:
        return {
            "id": f"tch_{change.id}",
            "kind": change.kind,
            "from_": change.from_code,
            "to": change.to_code,
            "metric_value": change.metric_value,
            "reason": change.reason,
            "at": change.at,
            "actor": change.actor,
        }


class TierChangePageQuerySchema(PageQuerySchema):
    pass


class TierChangePageSchema(PageSchema):
    items = fields.List(fields.Nested(TierChangeSchema), required=True)
