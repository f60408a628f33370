"""Request and response bodies of the referral calls."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from loyalty.api import PageSchema, Pattern, Timestamp, free_text
from loyalty.ledger.schemas import Currency
from loyalty.referrals.rules import ABUSE_REASONS, REFERRER_OUTCOMES, STATUSES

MAX_POINTS = 10**9
MAX_MONEY = 10**15
MAX_CAP = 10**6
TEXT = free_text(blank=False)
# An http(s) URL with {code} where the member's referral code goes.
LINK_TEMPLATE = Pattern(
    r"^https?://[^\x00-\x1f\x7f-\x9f]*\{code\}[^\x00-\x1f\x7f-\x9f]*$",
    error="Must be an http(s) URL containing {{code}}.",
)


def _points(description: str) -> fields.Integer:
    return fields.Integer(
        strict=True,
        validate=validate.Range(min=0, max=MAX_POINTS),
        metadata={"description": description},
    )


def _cap(description: str, minimum: int = 0) -> fields.Integer:
    return fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=minimum, max=MAX_CAP),
        metadata={"description": description},
    )


class ReferralTermsSchema(Schema):
    enabled = fields.Boolean(
        required=True, metadata={"description": "Whether referrals qualify and are rewarded"}
    )
    min_order_total = fields.Integer(
        required=True,
        metadata={"description": "Minimum qualifying order, after refunds, in minor units"},
    )
    min_order_currency = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Currency of the minimum; null: orders in any currency"},
    )
    referrer_points = fields.Integer(required=True)
    referrer_reward_id = fields.String(required=True, allow_none=True)
    referee_points = fields.Integer(required=True)
    referee_reward_id = fields.String(required=True, allow_none=True)
    monthly_cap = fields.Integer(required=True, allow_none=True)
    total_cap = fields.Integer(required=True, allow_none=True)
    shared_tier_days = fields.Integer(required=True, allow_none=True)
    velocity_limit = fields.Integer(required=True, allow_none=True)
    link_template = fields.String(required=True, allow_none=True)
    updated_at = Timestamp(required=True)
    updated_by = fields.String(required=True, allow_none=True)


class ReferralTermsUpdateSchema(Schema):
    enabled = fields.Boolean()
    min_order_total = fields.Integer(
        strict=True,
        validate=validate.Range(min=0, max=MAX_MONEY),
        metadata={"description": "Minimum qualifying order, after refunds, in minor units"},
    )
    min_order_currency = Currency(
        nullable=True, description="ISO 4217 code of the minimum; null: any currency"
    )
    referrer_points = _points("Bonus points for the referrer per qualified referral")
    referrer_reward_id = fields.String(
        allow_none=True,
        validate=validate.Length(min=1, max=40),
        metadata={"description": "A catalogue reward given free to the referrer"},
    )
    referee_points = _points("Bonus points for the referee on qualification")
    referee_reward_id = fields.String(
        allow_none=True,
        validate=validate.Length(min=1, max=40),
        metadata={"description": "A catalogue reward given free to the referee"},
    )
    monthly_cap = _cap("Rewarded referrals per referrer per calendar month (UTC); null: none")
    total_cap = _cap("Rewarded referrals per referrer in all; null: no cap")
    shared_tier_days = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=1, max=3650),
        metadata={"description": "Days the referee shares the referrer's higher tier; null: off"},
    )
    velocity_limit = _cap("Referrals per referrer per 24 hours before review; null: none", 1)
    link_template = fields.String(
        allow_none=True,
        validate=[validate.Length(min=1, max=500), LINK_TEMPLATE],
        metadata={
            "description": 'Shareable link with {code}, e.g. "https://shop.example/r/{code}"'
        },
    )


class ReferralSchema(Schema):
    id = fields.String(required=True)
    referrer_id = fields.String(required=True)
    referee_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    reason = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Why rejected or held: " + ", ".join((*ABUSE_REASONS, "manual"))},
    )
    note = fields.String(
        required=True, allow_none=True, metadata={"description": "The reviewer's reason"}
    )
    referrer_outcome = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Once qualified: " + ", ".join(REFERRER_OUTCOMES)},
    )
    referrer_points = fields.Integer(required=True)
    referee_points = fields.Integer(required=True)
    referrer_claim_id = fields.String(required=True, allow_none=True)
    referee_claim_id = fields.String(required=True, allow_none=True)
    referrer_points_clawed_back = fields.Integer(required=True)
    referee_points_clawed_back = fields.Integer(required=True)
    created_at = Timestamp(required=True)
    qualified_at = Timestamp(required=True, allow_none=True)
    reviewed_at = Timestamp(required=True, allow_none=True)
    reviewed_by = fields.String(required=True, allow_none=True)
    clawed_back_at = Timestamp(required=True, allow_none=True)


class ReferralPageSchema(PageSchema):
    items = fields.List(fields.Nested(ReferralSchema), required=True)


class ReferralReviewSchema(Schema):
    reason = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=500), TEXT],
        metadata={"description": "Why: kept in the referral and the audit trail"},
    )


class RefereeSchema(Schema):
    referral_id = fields.String(required=True)
    name = fields.String(required=True, metadata={"description": "First name, or a masked email"})
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    enrolled_at = Timestamp(required=True)
    qualified_at = Timestamp(required=True, allow_none=True)


class ReferralCountsSchema(Schema):
    invited = fields.Integer(required=True)
    pending = fields.Integer(required=True)
    qualified = fields.Integer(required=True)
    held = fields.Integer(required=True)
    rejected = fields.Integer(required=True)
    clawed_back = fields.Integer(required=True)


class MemberReferralsSchema(PageSchema):
    member_id = fields.String(required=True)
    referral_code = fields.String(required=True)
    link = fields.String(
        required=True, allow_none=True, metadata={"description": "Null without a link template"}
    )
    counts = fields.Nested(ReferralCountsSchema, required=True)
    points_earned = fields.Integer(
        required=True, metadata={"description": "Referral points earned, net of clawbacks"}
    )
    items = fields.List(fields.Nested(RefereeSchema), required=True)
