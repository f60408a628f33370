"""The outbound event types and the ``data`` each carries (payload version 1).

Every outbound event is an envelope ``{id, type, version, occurred_at, member_id, data}``; this
module says which types exist and documents each one's ``data``. Fields are only ever added to
a version; a change that removes or retypes a field gets a new version.
"""

from __future__ import annotations

from marshmallow import Schema, fields

from loyalty.api import Timestamp

PAYLOAD_VERSION = 1


class Balance(Schema):
    available = fields.Integer(required=True)
    pending = fields.Integer(required=True)
    held = fields.Integer(required=True)


class MemberData(Schema):
    member_id = fields.String(required=True)
    external_id = fields.String(required=True)
    status = fields.String(required=True)
    tier = fields.String(allow_none=True, metadata={"description": "The tier's code."})
    referrer_id = fields.String(allow_none=True)
    enrolled_at = Timestamp(required=True)


class MemberUpdatedData(MemberData):
    changed = fields.List(
        fields.String(), required=True, metadata={"description": "The fields that changed."}
    )


class PointsAccruedData(Schema):
    source = fields.String(
        required=True,
        metadata={
            "description": "`order` (an order earned them) or `bonus` (a badge, a "
            "referral, a birthday gift: `reference` says which)."
        },
    )
    order_id = fields.String(allow_none=True)
    channel_id = fields.String(allow_none=True)
    reference = fields.String(allow_none=True, metadata={"description": "`badge:...` and so on."})
    points = fields.Integer(required=True)
    status = fields.String(required=True, metadata={"description": "`pending` or `active`."})
    activates_at = Timestamp(required=True)
    balance = fields.Nested(Balance, required=True)


class PointsActivatedData(Schema):
    order_id = fields.String(allow_none=True)
    points = fields.Integer(required=True)
    balance = fields.Nested(Balance, required=True)


class PointsRedeemedData(Schema):
    entry_id = fields.String(required=True)
    points = fields.Integer(required=True)
    reference = fields.String(
        allow_none=True, metadata={"description": "What the points paid for (`hold:...`, ...)."}
    )
    balance = fields.Nested(Balance, required=True)


class PointsReversedData(Schema):
    order_id = fields.String(allow_none=True, metadata={"description": "A refunded order's."})
    refund_id = fields.String(allow_none=True)
    reference = fields.String(
        allow_none=True, metadata={"description": "A clawed-back bonus's (`referral:...`)."}
    )
    points = fields.Integer(required=True, metadata={"description": "The points taken back."})
    shortfall = fields.Integer(
        required=True, metadata={"description": "Points that could not be taken back."}
    )
    balance = fields.Nested(Balance, required=True)


class PointsAdjustedData(Schema):
    entry_id = fields.String(required=True)
    points = fields.Integer(required=True)
    reason = fields.String(required=True)
    balance = fields.Nested(Balance, required=True)


class PointsReturnedData(Schema):
    entry_id = fields.String(required=True)
    points = fields.Integer(required=True)
    reference = fields.String(allow_none=True)
    balance = fields.Nested(Balance, required=True)


class PointsExpiredData(Schema):
    points = fields.Integer(required=True)
    reason = fields.String(
        required=True, metadata={"description": "`expiry_date` or `inactivity`."}
    )
    balance = fields.Nested(Balance, required=True)


class PointsExpiringSoonData(Schema):
    points = fields.Integer(
        required=True,
        metadata={"description": "The member's points that expire then and are not spent yet."},
    )
    expires_at = Timestamp(required=True)


class HoldData(Schema):
    hold_id = fields.String(required=True)
    points = fields.Integer(required=True, metadata={"description": "The points held."})
    captured_points = fields.Integer(allow_none=True)
    status = fields.String(required=True)
    balance = fields.Nested(Balance, required=True)


class TierData(Schema):
    from_tier = fields.String(allow_none=True, metadata={"description": "The tier's code."})
    to_tier = fields.String(allow_none=True, metadata={"description": "The tier's code."})
    kind = fields.String(
        required=True,
        metadata={
            "description": "`upgrade`, `downgrade` (at a review), `manual` (assigned by "
            "a manager), `manual_ended`, `paid` (a Stripe subscription) or `paid_ended`."
        },
    )
    reason = fields.String(allow_none=True)


class RewardData(Schema):
    claim_id = fields.String(required=True)
    reward_id = fields.String(required=True)
    points = fields.Integer(required=True, metadata={"description": "What the claim cost."})
    source = fields.String(
        required=True, metadata={"description": "`purchase` (bought with points) or `gift`."}
    )
    code = fields.String(allow_none=True, metadata={"description": "The member's coupon code."})


class BadgeData(Schema):
    award_id = fields.String(required=True)
    badge_id = fields.String(required=True)
    level = fields.Integer(required=True)
    level_name = fields.String(required=True)
    bonus_points = fields.Integer(required=True)


class ReferralData(Schema):
    referral_id = fields.String(required=True)
    referrer_id = fields.String(required=True)
    referee_id = fields.String(required=True)


class FirstOrderData(Schema):
    order_id = fields.String(required=True)
    care_window_ends_at = Timestamp(
        required=True, metadata={"description": "72 hours after the order was placed."}
    )
    channel_id = fields.String(required=True)
    placed_at = Timestamp(required=True)


class BirthdayData(Schema):
    birthday = fields.Date(required=True, metadata={"description": "The date of birth."})
    celebrated_on = fields.Date(
        required=True,
        metadata={
            "description": "The day of the birthday in the member's time zone (28 February "
            "for a 29 February birthday in other years)."
        },
    )
    timezone = fields.String(required=True, metadata={"description": "The member's time zone."})


class InactiveData(Schema):
    last_activity_at = Timestamp(
        required=True,
        metadata={"description": "The member's last earning or spending, or their enrolment."},
    )
    inactive_days = fields.Integer(
        required=True, metadata={"description": "The inactivity threshold that was reached."}
    )


class AtRiskData(Schema):
    flag_id = fields.String(required=True)
    reason = fields.String(
        required=True,
        metadata={
            "description": "`activity_drop` (the last 30 days down by the threshold against "
            "the 90 days before) or `silent` (the silent stage's threshold passed)."
        },
    )
    recent_activity = fields.Integer(
        required=True, metadata={"description": "Orders, redemptions and events, last 30 days."}
    )
    baseline_activity = fields.Float(
        required=True, metadata={"description": "The same over the 90 days before, per 30 days."}
    )
    last_active_at = Timestamp(allow_none=True)


class AlertData(Schema):
    alert_id = fields.String(required=True)
    metric = fields.String(required=True, metadata={"description": "`retention_30_day`."})
    compared_with = fields.String(required=True, metadata={"description": "`week` or `month`."})
    day = fields.Date(required=True)
    current_rate = fields.Float(required=True)
    previous_rate = fields.Float(required=True)
    drop_points = fields.Float(required=True, metadata={"description": "Percentage points."})
    members = fields.Integer(
        required=True, metadata={"description": "Members in the measured cohort now."}
    )


# type -> (schema of its data, description)
CATALOGUE: dict[str, tuple[type[Schema], str]] = {
    "member.enrolled": (MemberData, "A member joined the programme."),
    "member.updated": (MemberUpdatedData, "A member's profile or status changed."),
    "points.accrued": (PointsAccruedData, "An order (pending or active) or a bonus earned points."),
    "points.activated": (PointsActivatedData, "Pending points became spendable."),
    "points.redeemed": (PointsRedeemedData, "Points were spent (a redemption or a capture)."),
    "points.reversed": (PointsReversedData, "A refund or a clawback took points back."),
    "points.returned": (PointsReturnedData, "A cancelled reward claim gave its points back."),
    "points.adjusted": (PointsAdjustedData, "A manager credited or debited points."),
    "points.expired": (PointsExpiredData, "Points expired."),
    "points.expiring_soon": (PointsExpiringSoonData, "Points expire within the notice period."),
    "hold.created": (HoldData, "Points were held at checkout."),
    "hold.captured": (HoldData, "A hold was captured (spent)."),
    "hold.released": (HoldData, "A hold was released; its points are back."),
    "hold.expired": (HoldData, "A hold ran out of time; its points are back."),
    "tier.upgraded": (TierData, "A member moved up a tier."),
    "tier.downgraded": (TierData, "A member moved down a tier (or lost it)."),
    "reward.claimed": (RewardData, "A member claimed a reward with points."),
    "reward.used": (RewardData, "A claimed reward's coupon was used."),
    "reward.cancelled": (RewardData, "An unused claim was cancelled (its points returned)."),
    "badge.awarded": (BadgeData, "A member earned a badge (or a badge level)."),
    "referral.qualified": (ReferralData, "A referred member's first order qualified."),
    "referral.clawed_back": (ReferralData, "A qualifying order was refunded: rewards taken back."),
    "lifecycle.first_order": (FirstOrderData, "A member's first order: the 72-hour care window."),
    "member.birthday": (BirthdayData, "It is the member's birthday (their time zone)."),
    "member.inactive": (InactiveData, "No activity for the configured number of days."),
    "member.at_risk": (AtRiskData, "The churn warning flagged the member (once per spell)."),
    "analytics.alert": (AlertData, "30-day retention dropped against a week or a month before."),
}
