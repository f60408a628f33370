"""Bodies of the earning calls: earning settings, product multipliers, campaigns and order
previews."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from loyalty.api import (
    PageQuerySchema,
    PageSchema,
    Timestamp,
    decimal_schema,
    free_text,
    positive_decimal_pattern,
)
from loyalty.earning.rules import CAMPAIGN_TARGETS, MULTIPLIER_SCOPES
from loyalty.ledger.schemas import (
    MAX_MONEY,
    MAX_POINTS,
    ComponentSchema,
    Currency,
    OrderItemSchema,
)
from loyalty.members.rules import STAGES

CAMPAIGN_STATUSES = ("scheduled", "running", "exhausted", "ended", "paused")
MAX_TARGET_VALUES = 10_000
MAX_CATEGORIES = 500


_printable = free_text()


def _between(low: Decimal, high: Decimal) -> Any:
    """Above ``low`` and at most ``high`` (a function, so the spec shows the bounds as the
    field's metadata gives them, as numbers)."""

    def check(value: Decimal) -> None:
        if not low < value <= high:
            raise ValidationError(f"Must be above {low} and at most {high}.")

    return check


def _multiplier(
    minimum: Decimal, *, required: bool = False, allow_none: bool = False
) -> fields.Decimal:
    return fields.Decimal(
        required=required,
        allow_none=allow_none,
        places=4,
        as_string=True,
        allow_nan=False,
        validate=_between(minimum, Decimal(100)),
        metadata={
            "description": f"Above {minimum}, at most 100, with at most 4 decimal places, "
            'e.g. "1.5" (a string in responses)',
            **decimal_schema(
                positive_decimal_pattern(2, above_one=minimum == 1),
                float(minimum + Decimal("0.0001")),
                100,
                nullable=allow_none,
            ),
        },
    )


# --- earning settings ----------------------------------------------------------------------


class EarningSettingsSchema(Schema):
    minimum_order_total = fields.Integer(
        required=True, allow_none=True, metadata={"description": "Minor units; null: none"}
    )
    minimum_order_currency = fields.String(required=True, allow_none=True)
    excluded_categories = fields.List(fields.String(), required=True)
    daily_cap = fields.Integer(required=True, allow_none=True)
    monthly_cap = fields.Integer(required=True, allow_none=True)
    updated_at = Timestamp(required=True)
    updated_by = fields.String(required=True, allow_none=True)


class EarningSettingsUpdateSchema(Schema):
    minimum_order_total = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=1, max=MAX_MONEY),
        metadata={
            "description": "Orders below this (minor units, excluded items not counted) "
            "earn nothing; null removes the minimum"
        },
    )
    minimum_order_currency = Currency(
        nullable=True,
        description="ISO 4217 code of minimum_order_total; give both together, or null both "
        "to remove the minimum",
    )
    excluded_categories = fields.List(
        fields.String(validate=[validate.Length(min=1, max=100), _printable]),
        validate=validate.Length(max=MAX_CATEGORIES),
        metadata={"description": "Categories that earn nothing (gift cards, say)"},
    )
    daily_cap = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=1, max=MAX_POINTS),
        metadata={"description": "Most points a member's orders earn per day; null: no cap"},
    )
    monthly_cap = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=1, max=MAX_POINTS),
        metadata={"description": "Most points a member's orders earn per month; null: no cap"},
    )

    class Meta:
        # The minimum and its currency come together: both set, both null, or neither given.
        json_schema = {
            "dependentRequired": {
                "minimum_order_total": ["minimum_order_currency"],
                "minimum_order_currency": ["minimum_order_total"],
            },
            "if": {
                "required": ["minimum_order_total"],
                "properties": {"minimum_order_total": {"type": "null"}},
            },
            "then": {"properties": {"minimum_order_currency": {"type": "null"}}},
            "else": {"properties": {"minimum_order_currency": {"type": "string"}}},
        }


# --- product multipliers -------------------------------------------------------------------


class MultiplierSchema(Schema):
    id = fields.String(required=True)
    scope = fields.String(required=True, validate=validate.OneOf(MULTIPLIER_SCOPES))
    match = fields.String(required=True, metadata={"description": "The category or the SKU"})
    multiplier = fields.Decimal(
        required=True, places=4, as_string=True, metadata={"type": "string"}
    )
    label = fields.String(required=True, allow_none=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class MultiplierCreateSchema(Schema):
    scope = fields.String(required=True, validate=validate.OneOf(MULTIPLIER_SCOPES))
    match = fields.String(required=True, validate=[validate.Length(min=1, max=100), _printable])
    multiplier = _multiplier(Decimal(0), required=True)
    label = fields.String(
        allow_none=True,
        validate=[validate.Length(min=1, max=100), _printable],
        metadata={"description": 'Shown in order breakdowns; default "<match> x<multiplier>"'},
    )


class MultiplierUpdateSchema(Schema):
    multiplier = _multiplier(Decimal(0))
    label = fields.String(allow_none=True, validate=[validate.Length(min=1, max=100), _printable])


class MultiplierListSchema(Schema):
    items = fields.List(fields.Nested(MultiplierSchema), required=True)


# --- campaigns -----------------------------------------------------------------------------


class CampaignSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True, allow_none=True)
    starts_at = Timestamp(required=True)
    ends_at = Timestamp(required=True)
    target = fields.String(required=True, validate=validate.OneOf(CAMPAIGN_TARGETS))
    target_values = fields.List(fields.String(), required=True)
    multiplier = fields.Decimal(
        required=True, allow_none=True, places=4, as_string=True, metadata={"type": "string"}
    )
    bonus_points = fields.Integer(required=True, allow_none=True)
    budget = fields.Integer(required=True, allow_none=True)
    spent = fields.Integer(required=True, metadata={"description": "Points given so far"})
    active = fields.Boolean(required=True)
    holdout_pct = fields.Integer(
        required=True, metadata={"description": "Percent of the target held out, by member"}
    )
    status = fields.String(required=True, validate=validate.OneOf(CAMPAIGN_STATUSES))
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class _CampaignFields(Schema):
    name = fields.String(validate=[validate.Length(min=1, max=100), _printable])
    description = fields.String(allow_none=True, validate=validate.Length(max=500))
    starts_at = Timestamp()
    ends_at = Timestamp(metadata={"description": "After starts_at (excluded from the window)"})
    target = fields.String(
        validate=validate.OneOf(CAMPAIGN_TARGETS),
        metadata={
            "description": "all, tiers (codes), stages (new, active, silent, churned) "
            "or members (ids)"
        },
    )
    target_values = fields.List(
        fields.String(validate=[validate.Length(min=1, max=128), _printable]),
        validate=validate.Length(max=MAX_TARGET_VALUES),
    )
    multiplier = _multiplier(Decimal(1), allow_none=True)
    bonus_points = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=1, max=MAX_POINTS)
    )
    budget = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=1, max=MAX_POINTS),
        metadata={"description": "Points the campaign may give in all; it stops when spent"},
    )
    active = fields.Boolean(metadata={"description": "false pauses the campaign"})
    holdout_pct = fields.Integer(
        strict=True,
        validate=validate.Range(min=0, max=50),
        metadata={
            "description": "Percent of the target held out to measure the campaign's uplift "
            "(0 to 50, default 0): the same members always, chosen by a hash of the campaign "
            "and member ids; they earn no campaign points (GET /v1/analytics/campaigns/"
            "{campaign_id}/uplift compares them)"
        },
    )


# What a campaign targets decides its target_values: none for all members, stage names for
# stages, tier codes or member ids (that exist) for tiers and members.
TARGET_VALUES = {
    "anyOf": [
        {"properties": {"target": {"const": "all"}, "target_values": {"maxItems": 0}}},
        {
            "required": ["target_values"],
            "properties": {
                "target": {"const": "stages"},
                "target_values": {"minItems": 1, "items": {"enum": list(STAGES)}},
            },
        },
        {
            "required": ["target_values"],
            "properties": {
                "target": {"enum": ["tiers", "members"]},
                "target_values": {"minItems": 1},
            },
        },
    ]
}


class CampaignCreateSchema(_CampaignFields):
    name = fields.String(required=True, validate=[validate.Length(min=1, max=100), _printable])
    starts_at = Timestamp(required=True)
    ends_at = Timestamp(
        required=True, metadata={"description": "After starts_at (excluded from the window)"}
    )

    class Meta:
        # A multiplier, a bonus, or both; target_values as the target (default all) needs.
        json_schema = {
            "not": {
                "properties": {"multiplier": {"type": "null"}, "bonus_points": {"type": "null"}}
            },
            "dependentSchemas": {"target": TARGET_VALUES},
            "if": {"not": {"required": ["target"]}},
            "then": {"properties": {"target_values": {"maxItems": 0}}},
        }


class CampaignUpdateSchema(_CampaignFields):
    """Checked as the campaign will be after the change (window, multiplier or bonus, target)."""


class CampaignQuerySchema(PageQuerySchema):
    status = fields.String(validate=validate.OneOf(CAMPAIGN_STATUSES))


class CampaignPageSchema(PageSchema):
    items = fields.List(fields.Nested(CampaignSchema), required=True)


# --- previews ------------------------------------------------------------------------------


class PreviewCreateSchema(Schema):
    member_id = fields.String(required=True, validate=validate.Length(min=1, max=40))
    total = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=0, max=MAX_MONEY)
    )
    currency = Currency(required=True)
    items = fields.List(
        fields.Nested(OrderItemSchema),
        validate=validate.Length(max=500),
        metadata={"description": "The order's lines; each SKU at most once"},
    )
    placed_at = Timestamp(metadata={"description": "Default now"})


class PreviewItemSchema(Schema):
    sku = fields.String(required=True)
    points = fields.Integer(required=True)


class PreviewSchema(Schema):
    member_id = fields.String(required=True)
    points = fields.Integer(required=True, metadata={"description": "What the order would earn"})
    breakdown = fields.List(fields.Nested(ComponentSchema), required=True)
    description = fields.String(
        required=True, metadata={"description": "e.g. base 120 + Gold x1.25 +30"}
    )
    items = fields.List(fields.Nested(PreviewItemSchema), required=True)
