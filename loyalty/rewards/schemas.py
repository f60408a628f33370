"""Request and response bodies of the perk, reward and claim calls."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from loyalty.api import PageQuerySchema, PageSchema, Timestamp, free_text
from loyalty.ledger.schemas import BalanceSchema, Currency
from loyalty.rewards.rules import (
    CLAIM_SOURCES,
    CLAIM_STATUSES,
    MAX_MONEY,
    MAX_PERCENT,
    MAX_POINTS,
    PERK_KINDS,
    PERK_VALUE_FIELDS,
    REFUSAL_REASONS,
    REWARD_KINDS,
    REWARD_VALUE_FIELDS,
)

NAME = validate.Length(min=1, max=100)
DESCRIPTION = validate.Length(max=500)
TIER_CODES = validate.Length(max=50)
TIER_CODE = validate.Length(min=1, max=32)
REWARD_VALUES = ("amount", "currency", "percent", "sku")
PERK_VALUES = ("percent", "bonus_points", "reward_id")


_printable = free_text()


def _set(name: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"not": {"type": "null"}}}}


def _by_kind(
    kinds: tuple[str, ...], needs: dict[str, tuple[str, ...]], values: tuple[str, ...]
) -> dict[str, Any]:
    """One branch per kind: the value fields it needs are given, the others absent or null
    (a ``oneOf`` under ``dependentSchemas.kind``: see `loyalty.api.SchemaConverter`)."""
    branches = []
    for kind in kinds:
        needed = needs[kind]
        branch: dict[str, Any] = {
            "properties": {
                "kind": {"const": kind},
                **{name: {"type": "null"} for name in values if name not in needed},
            }
        }
        if needed:
            branch["allOf"] = [_set(name) for name in needed]
        branches.append(branch)
    return {"oneOf": branches}


def _percent(**kwargs: Any) -> fields.Integer:
    return fields.Integer(
        strict=True, validate=validate.Range(min=1, max=MAX_PERCENT), allow_none=True, **kwargs
    )


# --- rewards --------------------------------------------------------------------------------


class RewardValuesSchema(Schema):
    """Fields a reward is created with and that can be changed later."""

    name = fields.String(validate=[NAME, _printable])
    description = fields.String(validate=DESCRIPTION, allow_none=True)
    points_cost = fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_POINTS))
    amount = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=1, max=MAX_MONEY),
        metadata={"description": "fixed_discount: the discount in minor units"},
    )
    currency = Currency(nullable=True, description="fixed_discount: ISO 4217 code of the amount")
    percent = _percent(metadata={"description": "percentage_discount: 1 to 100"})
    sku = fields.String(
        allow_none=True,
        validate=[validate.Length(min=1, max=100), _printable],
        metadata={"description": "free_product: the product given"},
    )
    tier_codes = fields.List(
        fields.String(validate=TIER_CODE),
        validate=TIER_CODES,
        metadata={"description": "Tiers whose members may claim it; empty: every member"},
    )
    stock = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=0, max=10**9),
        metadata={"description": "Units left; null: unlimited"},
    )
    per_member_limit = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=1, max=10**6),
        metadata={"description": "Claims per member (cancelled ones excepted); null: no limit"},
    )
    available_from = Timestamp(allow_none=True, metadata={"description": "Claimable from"})
    available_until = Timestamp(
        allow_none=True, metadata={"description": "Claimable until; after available_from"}
    )
    coupon_valid_days = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=3650),
        metadata={"description": "Days a claim's coupon stays usable; default 30"},
    )
    active = fields.Boolean()


class RewardCreateSchema(RewardValuesSchema):
    kind = fields.String(required=True, validate=validate.OneOf(REWARD_KINDS))
    name = fields.String(required=True, validate=[NAME, _printable])
    points_cost = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=MAX_POINTS)
    )

    class Meta:
        # Each kind carries its own value fields and none of the others.
        json_schema = {
            "dependentSchemas": {"kind": _by_kind(REWARD_KINDS, REWARD_VALUE_FIELDS, REWARD_VALUES)}
        }


class RewardUpdateSchema(RewardValuesSchema):
    """Any of the reward's fields but its kind; the value fields must suit the reward's kind
    (checked against the stored reward)."""


class RewardSchema(Schema):
    id = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(REWARD_KINDS))
    name = fields.String(required=True)
    description = fields.String(required=True, allow_none=True)
    points_cost = fields.Integer(required=True)
    amount = fields.Integer(required=True, allow_none=True)
    currency = fields.String(required=True, allow_none=True)
    percent = fields.Integer(required=True, allow_none=True)
    sku = fields.String(required=True, allow_none=True)
    tier_codes = fields.List(fields.String(), required=True)
    stock = fields.Integer(required=True, allow_none=True)
    per_member_limit = fields.Integer(required=True, allow_none=True)
    available_from = Timestamp(required=True, allow_none=True)
    available_until = Timestamp(required=True, allow_none=True)
    coupon_valid_days = fields.Integer(required=True)
    active = fields.Boolean(required=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class RewardQuerySchema(PageQuerySchema):
    active = fields.Boolean(metadata={"description": "Only active (true) or inactive (false)"})


class RewardPageSchema(PageSchema):
    items = fields.List(fields.Nested(RewardSchema), required=True)


class MemberRewardSchema(RewardSchema):
    eligible = fields.Boolean(
        required=True, metadata={"description": "Whether the member can claim it now"}
    )
    reason = fields.String(
        required=True,
        allow_none=True,
        validate=validate.OneOf(REFUSAL_REASONS),
        metadata={"description": "Why not, when not eligible: " + ", ".join(REFUSAL_REASONS)},
    )


class MemberRewardPageSchema(PageSchema):
    items = fields.List(fields.Nested(MemberRewardSchema), required=True)


# --- perks ----------------------------------------------------------------------------------


class PerkValuesSchema(Schema):
    name = fields.String(validate=[NAME, _printable])
    description = fields.String(validate=DESCRIPTION, allow_none=True)
    tier_codes = fields.List(
        fields.String(validate=TIER_CODE),
        validate=TIER_CODES,
        metadata={"description": "Codes of the tiers that have the perk"},
    )
    percent = _percent(metadata={"description": "exclusive_discount: 1 to 100"})
    bonus_points = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=1, max=MAX_POINTS),
        metadata={"description": "birthday_gift: bonus points credited"},
    )
    reward_id = fields.String(
        allow_none=True,
        validate=validate.Length(min=1, max=40),
        metadata={"description": "birthday_gift: a reward given free as a claim"},
    )
    active = fields.Boolean()


class PerkCreateSchema(PerkValuesSchema):
    kind = fields.String(required=True, validate=validate.OneOf(PERK_KINDS))
    name = fields.String(required=True, validate=[NAME, _printable])

    class Meta:
        # Each kind carries its own value fields and none of the others; a birthday gift
        # gives bonus points, a reward, or both.
        others = tuple(kind for kind in PERK_KINDS if kind != "birthday_gift")
        birthday_gift = {
            "properties": {"kind": {"const": "birthday_gift"}, "percent": {"type": "null"}},
            "anyOf": [_set("bonus_points"), _set("reward_id")],
        }
        json_schema = {
            "dependentSchemas": {
                "kind": {
                    "oneOf": [
                        *_by_kind(others, PERK_VALUE_FIELDS, PERK_VALUES)["oneOf"],
                        birthday_gift,
                    ]
                }
            }
        }


class PerkUpdateSchema(PerkValuesSchema):
    """Any of the perk's fields but its kind; the value fields must suit the perk's kind
    (checked against the stored perk)."""


class PerkSchema(Schema):
    id = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(PERK_KINDS))
    name = fields.String(required=True)
    description = fields.String(required=True, allow_none=True)
    tier_codes = fields.List(fields.String(), required=True)
    percent = fields.Integer(required=True, allow_none=True)
    bonus_points = fields.Integer(required=True, allow_none=True)
    reward_id = fields.String(required=True, allow_none=True)
    active = fields.Boolean(required=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class PerkQuerySchema(PageQuerySchema):
    kind = fields.String(validate=validate.OneOf(PERK_KINDS))


class PerkPageSchema(PageSchema):
    items = fields.List(fields.Nested(PerkSchema), required=True)


class BirthdayStatusSchema(Schema):
    year = fields.Integer(required=True, metadata={"description": "The member's current year"})
    granted_at = Timestamp(
        required=True, allow_none=True, metadata={"description": "When this year's gift came"}
    )
    next_due_month = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "YYYY-MM of the next gift; null without a birthday"},
    )


class MemberPerkSchema(PerkSchema):
    birthday = fields.Nested(
        BirthdayStatusSchema,
        required=True,
        allow_none=True,
        metadata={"description": "birthday_gift only: this year's status"},
    )


class MemberPerkListSchema(Schema):
    items = fields.List(fields.Nested(MemberPerkSchema), required=True)


# --- claims ---------------------------------------------------------------------------------


class ClaimCreateSchema(Schema):
    reference = fields.String(
        validate=[validate.Length(min=1, max=200), _printable],
        metadata={
            "description": "Your reference, e.g. the cart; the same reference again returns "
            "the first claim (200) and spends nothing"
        },
    )


class ClaimSchema(Schema):
    id = fields.String(required=True)
    reward_id = fields.String(required=True)
    member_id = fields.String(required=True)
    source = fields.String(required=True, validate=validate.OneOf(CLAIM_SOURCES))
    points = fields.Integer(required=True, metadata={"description": "Points spent"})
    coupon_code = fields.String(required=True)
    status = fields.String(
        required=True,
        attribute="state",
        validate=validate.OneOf(CLAIM_STATUSES),
        metadata={"description": "As of now: an issued claim past expires_at is expired"},
    )
    expires_at = Timestamp(required=True)
    redemption_id = fields.String(required=True, allow_none=True)
    reference = fields.String(required=True, allow_none=True)
    created_at = Timestamp(required=True)
    used_at = Timestamp(required=True, allow_none=True)
    cancelled_at = Timestamp(required=True, allow_none=True)
    points_returned = fields.Integer(
        required=True, allow_none=True, metadata={"description": "Given back on cancellation"}
    )


class ClaimResultSchema(ClaimSchema):
    balance = fields.Nested(BalanceSchema, required=True)


class ClaimLookupSchema(Schema):
    coupon_code = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=64), _printable],
        metadata={"description": "The coupon code (case, spaces and dashes ignored)"},
    )


class ClaimQuerySchema(PageQuerySchema):
    status = fields.String(validate=validate.OneOf(CLAIM_STATUSES))


class ClaimPageSchema(PageSchema):
    items = fields.List(fields.Nested(ClaimSchema), required=True)
