"""Request and response bodies of the points calls."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import iso4217
from marshmallow import (
    Schema,
    ValidationError,
    fields,
    pre_dump,
    validate,
    validates,
    validates_schema,
)

from loyalty.api import PageQuerySchema, PageSchema, Timestamp, component, free_text
from loyalty.ledger.rules import (
    CALENDAR_PERIODS,
    EXPIRY_POLICIES,
    HOLD_STATUSES,
    REFUND_POLICIES,
    ROUNDING_MODES,
    currency_exponent,
)
from loyalty.members.rules import time_zones
from loyalty.members.schemas import TIME_ZONE

MAX_MONEY = 10**15  # minor units: far above any real order, far below 64-bit limits
MAX_POINTS = 10**12
MAX_ITEMS = 500
ORDER_ID = validate.Length(min=1, max=128)
_printable = free_text()


def _currency(*, nullable: bool = False) -> dict[str, Any]:
    """The ISO 4217 codes the programme takes (those with a minor unit), as a shared schema."""
    codes = sorted(c.code for c in iso4217.Currency if currency_exponent(c.code) is not None)
    # Upper case only here, so that generated clients get one enum member per currency; the
    # API also takes the code in lower case (Stripe sends it so) and answers upper case.
    schema = {
        "type": "string",
        "enum": codes,
        "description": "ISO 4217 code with a minor unit (lower case is accepted too)",
    }
    return component("Currency", schema, nullable=nullable)


CURRENCY = _currency()
CURRENCY_OR_NULL = _currency(nullable=True)


CURRENCY_CODE = re.compile(r"^(?:[A-Z]{3}|[a-z]{3})$")


class Currency(fields.String):
    """An ISO 4217 code of a currency with a minor unit, upper or lower case (Stripe sends
    lower case); loads upper case. The one currency field of every schema (orders, previews,
    minimums, reward amounts)."""

    def __init__(
        self, *, description: str = "ISO 4217 code, e.g. USD", nullable: bool = False, **kw: Any
    ) -> None:
        super().__init__(
            allow_none=nullable,
            validate=validate.Regexp(CURRENCY_CODE),  # for the spec: checked on loading
            metadata={"description": description, **(CURRENCY_OR_NULL if nullable else CURRENCY)},
            **kw,
        )

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        code = str(super()._deserialize(value, attr, data, **kwargs))
        # The pattern is checked here, on what was sent: the validators see the upper case.
        if not CURRENCY_CODE.fullmatch(code):
            raise ValidationError("Must be an ISO 4217 code (upper or lower case).")
        if currency_exponent(code.upper()) is None:
            raise ValidationError("Not an ISO 4217 currency with minor units.")
        return code.upper()


class BalanceSchema(Schema):
    available = fields.Integer(required=True)
    pending = fields.Integer(required=True)
    held = fields.Integer(required=True)


class OrderItemSchema(Schema):
    sku = fields.String(required=True, validate=[validate.Length(min=1, max=100), _printable])
    category = fields.String(validate=[validate.Length(min=1, max=100), _printable])
    quantity = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=1_000_000)
    )
    unit_price = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=0, max=MAX_MONEY),
        metadata={"description": "Minor units"},
    )


class OrderCreateSchema(Schema):
    order_id = fields.String(
        required=True,
        validate=[ORDER_ID, _printable],
        metadata={"description": "The storefront's order id, unique per channel"},
    )
    member_id = fields.String(required=True, validate=validate.Length(min=1, max=40))
    total = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=0, max=MAX_MONEY),
        metadata={"description": "Order total in minor units (cents); points are earned on it"},
    )
    currency = Currency(required=True)
    items = fields.List(
        fields.Nested(OrderItemSchema),
        validate=validate.Length(max=MAX_ITEMS),
        metadata={"description": "The order's lines; each SKU at most once"},
    )
    placed_at = Timestamp(
        metadata={
            "description": "When the order was placed; default now. At most 5 minutes ahead "
            "and, by default, 30 days back (the programme's max_order_age_days): older "
            "history comes in through `loyalty import`"
        }
    )


class ComponentSchema(Schema):
    rule = fields.String(
        required=True,
        metadata={"description": "base, product:<id>, tier:<code>, campaign:<id>, cap:daily..."},
    )
    kind = fields.String(
        required=True, metadata={"description": "base, product, tier, campaign, cap"}
    )
    label = fields.String(required=True, metadata={"description": "e.g. Gold x1.25"})
    points = fields.Integer(required=True)


class OrderResultSchema(Schema):
    order_id = fields.String(required=True)
    member_id = fields.String(required=True)
    points = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["pending", "active"]))
    activates_at = fields.String(
        required=True, metadata={"format": "date-time", "description": "When points activate"}
    )
    balance = fields.Nested(BalanceSchema, required=True)
    breakdown = fields.List(
        fields.Nested(ComponentSchema),
        metadata={"description": "The earning rules that produced the points"},
    )
    description = fields.String(
        metadata={"description": "The breakdown in words: base 120 + Gold x1.25 +30"}
    )


class RefundItemSchema(Schema):
    sku = fields.String(required=True, validate=validate.Length(min=1, max=100))
    quantity = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=1_000_000)
    )


class RefundCreateSchema(Schema):
    refund_id = fields.String(
        required=True,
        validate=[ORDER_ID, _printable],
        metadata={"description": "The storefront's refund id, unique per channel"},
    )
    amount = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=MAX_MONEY),
        metadata={"description": "Amount refunded in minor units (or give items)"},
    )
    items = fields.List(
        fields.Nested(RefundItemSchema),
        validate=validate.Length(min=1, max=MAX_ITEMS),
        metadata={"description": "Items refunded (or give amount); each SKU at most once"},
    )

    class Meta:
        # Exactly one of amount and items.
        json_schema = {
            "dependentSchemas": {"amount": {"not": {"required": ["items"]}}},
            "if": {"not": {"required": ["amount"]}},
            "then": {"required": ["items"]},
        }

    @validates_schema
    def _amount_or_items(self, data: dict[str, Any], **_: Any) -> None:
        if ("amount" in data) == ("items" in data):
            raise ValidationError("Give either amount or items.", "amount")
        skus = [item["sku"] for item in data.get("items", [])]
        if len(set(skus)) != len(skus):
            raise ValidationError("Each SKU may appear once.", "items")


class RefundResultSchema(Schema):
    refund_id = fields.String(required=True)
    order_id = fields.String(required=True)
    points_reversed = fields.Integer(required=True)
    shortfall = fields.Integer(
        required=True,
        metadata={"description": "Points not taken back because they were already spent"},
    )
    balance = fields.Nested(BalanceSchema, required=True)


class OrderLineSchema(Schema):
    sku = fields.String(required=True)
    category = fields.String(required=True, allow_none=True)
    quantity = fields.Integer(required=True)
    unit_price = fields.Integer(required=True, metadata={"description": "Minor units"})
    points = fields.Integer(
        required=True, metadata={"description": "The item's share of the points"}
    )
    amount = fields.Integer(
        required=True,
        metadata={
            "description": "The item's share of the order total (discounts spread over items)"
        },
    )
    refunded_quantity = fields.Integer(required=True)
    refunded_amount = fields.Integer(required=True)

    @pre_dump
    def _defaults(self, item: dict[str, Any], **_: Any) -> dict[str, Any]:
        # Items recorded before items carried their share of the money have it computed.
        return {
            "category": None,
            "amount": item["quantity"] * item["unit_price"],
            "refunded_amount": 0,
            **item,
        }


class OrderRefundSchema(Schema):
    refund_id = fields.String(required=True)
    amount = fields.Integer(required=True, metadata={"description": "Money refunded, minor units"})
    items = fields.List(fields.Nested(RefundItemSchema), required=True)
    points_reversed = fields.Integer(required=True)
    shortfall = fields.Integer(
        required=True,
        metadata={"description": "Points not taken back because they were already spent"},
    )
    created_at = Timestamp(required=True)


class OrderSchema(Schema):
    order_id = fields.String(required=True)
    member_id = fields.String(required=True)
    channel_id = fields.String(required=True, metadata={"description": "The channel it came from"})
    total = fields.Integer(required=True, metadata={"description": "Minor units"})
    currency = fields.String(required=True)
    placed_at = Timestamp(required=True)
    points = fields.Integer(required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(["pending", "active"]),
        metadata={"description": "Whether its points are still in the return window"},
    )
    activates_at = Timestamp(required=True)
    amount_refunded = fields.Integer(required=True)
    points_reversed = fields.Integer(required=True)
    items = fields.List(fields.Nested(OrderLineSchema), required=True)
    breakdown = fields.List(fields.Nested(ComponentSchema), required=True)
    refunds = fields.List(fields.Nested(OrderRefundSchema), required=True)
    created_at = Timestamp(required=True, metadata={"description": "When it was reported"})


class OrderPageQuerySchema(PageQuerySchema):
    pass


class OrderPageSchema(PageSchema):
    items = fields.List(fields.Nested(OrderSchema), required=True)


class RedemptionCreateSchema(Schema):
    points = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=MAX_POINTS)
    )
    reference = fields.String(
        validate=[validate.Length(min=1, max=200), _printable],
        metadata={"description": "Your reference, e.g. the cart or order id"},
    )
    reason = fields.String(validate=validate.Length(min=1, max=500))


class PointsMoveSchema(Schema):
    id = fields.String(required=True)
    points = fields.Integer(required=True)
    balance = fields.Nested(BalanceSchema, required=True)


class HoldCreateSchema(Schema):
    points = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=MAX_POINTS)
    )
    reference = fields.String(validate=[validate.Length(min=1, max=200), _printable])
    expires_in = fields.Integer(
        strict=True,
        validate=validate.Range(min=60, max=604800),
        metadata={"description": "Seconds until the hold is released; default 900"},
    )


class HoldSchema(Schema):
    id = fields.String(required=True)
    member_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(HOLD_STATUSES))
    points = fields.Integer(required=True)
    captured_points = fields.Integer(required=True, allow_none=True)
    redemption_id = fields.String(required=True, allow_none=True)
    reference = fields.String(required=True, allow_none=True)
    expires_at = Timestamp(required=True)
    created_at = Timestamp(required=True)


class HoldResultSchema(Schema):
    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(HOLD_STATUSES))
    points = fields.Integer(required=True, metadata={"description": "Points held or captured"})
    expires_at = Timestamp(required=True)
    redemption_id = fields.String(required=True, allow_none=True)
    balance = fields.Nested(BalanceSchema, required=True)


class CaptureSchema(Schema):
    points = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=MAX_POINTS),
        metadata={"description": "At most the held points; default all of them"},
    )


class AdjustmentCreateSchema(Schema):
    points = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=-MAX_POINTS, max=MAX_POINTS),
        metadata={"description": "Signed, not zero", "json_schema": {"not": {"const": 0}}},
    )
    reason = fields.String(
        required=True, validate=[validate.Length(min=1, max=500), free_text(blank=False)]
    )

    @validates("points")
    def _not_zero(self, value: int, **_: Any) -> None:
        if value == 0:
            raise ValidationError("Must not be zero.")


class ExpiringSchema(Schema):
    points = fields.Integer(required=True)
    expires_at = Timestamp(required=True)


class BalanceReportSchema(Schema):
    available = fields.Integer(required=True)
    pending = fields.Integer(required=True)
    held = fields.Integer(required=True)
    lifetime_earned = fields.Integer(required=True)
    expiring = fields.List(
        fields.Nested(ExpiringSchema),
        required=True,
        metadata={"description": "Points expiring in the next 90 days, by day, soonest first"},
    )


class ReferenceSchema(Schema):
    type = fields.String(required=True, metadata={"description": "order, refund, hold, ..."})
    id = fields.String(required=True)


class EntrySchema(Schema):
    id = fields.String(required=True)
    kind = fields.String(required=True)
    points = fields.Integer(required=True)
    reference = fields.Nested(ReferenceSchema, required=True, allow_none=True)
    external_reference = fields.String(required=True, allow_none=True)
    reason = fields.String(required=True, allow_none=True)
    created_at = Timestamp(required=True)
    balance_after = fields.Nested(BalanceSchema, required=True)

    @pre_dump
    def _from_entry(self, entry: Any, **_: Any) -> dict[str, Any]:
        return {
            "id": f"ent_{entry.id}",
            "kind": entry.kind,
            "points": entry.points,
            "reference": {"type": entry.reference_type, "id": entry.reference_id}
            if entry.reference_type
            else None,
            "external_reference": entry.external_reference,
            "reason": entry.reason,
            "created_at": entry.created_at,
            "balance_after": {
                "available": entry.balance_available,
                "pending": entry.balance_pending,
                "held": entry.balance_held,
            },
        }


class EntryPageQuerySchema(PageQuerySchema):
    pass


class EntryPageSchema(PageSchema):
    items = fields.List(fields.Nested(EntrySchema), required=True)


class SettingsSchema(Schema):
    earn_rate = fields.Decimal(
        required=True,
        places=4,
        as_string=True,
        metadata={
            "description": 'Points per major currency unit, as a decimal string, e.g. "2.5000"',
            "type": "string",
            "pattern": r"^\d+(\.\d+)?$",
        },
    )
    rounding = fields.String(required=True, validate=validate.OneOf(tuple(ROUNDING_MODES)))
    pending_days = fields.Integer(required=True)
    expiry_policy = fields.String(required=True, validate=validate.OneOf(EXPIRY_POLICIES))
    expiry_months = fields.Integer(required=True)
    expiry_period = fields.String(required=True, validate=validate.OneOf(CALENDAR_PERIODS))
    refund_policy = fields.String(required=True, validate=validate.OneOf(REFUND_POLICIES))
    hold_timeout_seconds = fields.Integer(required=True)
    timezone = fields.String(
        required=True,
        metadata={
            "description": "IANA time zone: calendar periods and expiry days end at its midnight"
        },
    )
    max_order_age_days = fields.Integer(
        required=True,
        metadata={"description": "Orders and events dated earlier than this are refused"},
    )
    updated_at = Timestamp(required=True)
    updated_by = fields.String(required=True, allow_none=True)


class SettingsUpdateSchema(Schema):
    earn_rate = fields.Decimal(
        places=4,
        as_string=True,
        allow_nan=False,
        validate=validate.Range(min=Decimal(0), max=Decimal(100_000)),
        metadata={
            "description": 'Points per major currency unit, 0 to 100000, e.g. "1.5"',
            "minimum": 0,
            "maximum": 100_000,
        },
    )
    rounding = fields.String(validate=validate.OneOf(tuple(ROUNDING_MODES)))
    pending_days = fields.Integer(strict=True, validate=validate.Range(min=0, max=365))
    expiry_policy = fields.String(validate=validate.OneOf(EXPIRY_POLICIES))
    expiry_months = fields.Integer(strict=True, validate=validate.Range(min=1, max=1200))
    expiry_period = fields.String(validate=validate.OneOf(CALENDAR_PERIODS))
    refund_policy = fields.String(validate=validate.OneOf(REFUND_POLICIES))
    hold_timeout_seconds = fields.Integer(strict=True, validate=validate.Range(min=60, max=604800))
    timezone = fields.String(
        validate=validate.OneOf(sorted(time_zones())),
        metadata={
            "description": "IANA time zone: calendar periods and expiry days end at its midnight",
            **TIME_ZONE,
        },
    )
    max_order_age_days = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=3650),
        metadata={"description": "Refuse orders and events older than this many days"},
    )
