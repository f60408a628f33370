"""Request and response bodies of the community calls: event types, event rules, events and
check-ins, badges, leaderboards and the community settings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from loyalty.api import (
    MAX_PAGE_SIZE,
    PageQuerySchema,
    PageSchema,
    Timestamp,
    decimal_schema,
    free_text,
    positive_decimal_pattern,
)
from loyalty.community.rules import (
    BADGE_RULES,
    CAP_PERIODS,
    EVENT_RULES,
    MAX_GRACE_DAYS,
    PROPERTY_NAME,
    PROPERTY_TYPES,
    TYPE_NAME,
)
from loyalty.ledger.schemas import BalanceSchema

MAX_POINTS = 1_000_000
NAME = validate.Length(min=1, max=100)
DESCRIPTION = validate.Length(max=500)
TYPE = [
    validate.Length(min=1, max=64),
    validate.Regexp(
        TYPE_NAME, error="Lower-case words of letters, digits and _ joined by dots (review.posted)."
    ),
]


_printable = free_text()


DECIMAL_STRING = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}


def _positive_decimal(digits: int, description: str, **extra: Any) -> fields.Decimal:
    high = 10**digits

    def check(value: Decimal) -> None:
        # A plain function, not validate.Range: apispec would write decimal bounds as strings.
        if not Decimal(0) < value <= Decimal(high):
            raise ValidationError(f"Must be above 0 and at most {high}.")

    return fields.Decimal(
        places=4,
        as_string=True,
        allow_nan=False,
        validate=check,
        metadata={
            "description": f"{description}; above 0, at most {high}, 4 decimal places",
            **decimal_schema(
                positive_decimal_pattern(digits),
                0.0001,
                high,
                nullable=extra.get("allow_none", False),
            ),
        },
        **extra,
    )


def _decimal_out(**extra: Any) -> fields.Decimal:
    return fields.Decimal(as_string=True, metadata=DECIMAL_STRING, **extra)


def _points(**kwargs: Any) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(min=0, max=MAX_POINTS), **kwargs)


# --- settings -------------------------------------------------------------------------------


class CommunitySettingsSchema(Schema):
    streak_grace_days = fields.Integer(
        required=True,
        metadata={"description": "Missed days in a row that do not break a check-in streak"},
    )
    updated_at = Timestamp(required=True)


class CommunitySettingsUpdateSchema(Schema):
    streak_grace_days = fields.Integer(
        strict=True, required=True, validate=validate.Range(min=0, max=MAX_GRACE_DAYS)
    )


# --- event types ----------------------------------------------------------------------------


class PropertyDefinitionSchema(Schema):
    type = fields.String(required=True, validate=validate.OneOf(PROPERTY_TYPES))
    required = fields.Boolean(load_default=False)


PROPERTIES = fields.Dict(
    keys=fields.String(
        validate=[
            validate.Length(min=1, max=64),
            validate.Regexp(PROPERTY_NAME, error="Lower-case letters, digits and _."),
        ]
    ),
    values=fields.Nested(PropertyDefinitionSchema),
    validate=validate.Length(max=20),
    metadata={
        "description": "name -> {type: string|integer|number|boolean, required}",
        "maxProperties": 20,
        "json_schema": {
            "propertyNames": {"minLength": 1, "maxLength": 64, "pattern": PROPERTY_NAME.pattern}
        },
    },
)


class EventTypeCreateSchema(Schema):
    name = fields.String(required=True, validate=TYPE)
    description = fields.String(validate=DESCRIPTION, allow_none=True)
    properties = PROPERTIES


class EventTypeUpdateSchema(Schema):
    description = fields.String(validate=DESCRIPTION, allow_none=True)
    properties = PROPERTIES


class EventTypeSchema(Schema):
    name = fields.String(required=True)
    description = fields.String(required=True, allow_none=True)
    properties = fields.Dict(
        keys=fields.String(), values=fields.Nested(PropertyDefinitionSchema), required=True
    )
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class EventTypePageSchema(PageSchema):
    items = fields.List(fields.Nested(EventTypeSchema), required=True)


# --- event rules ----------------------------------------------------------------------------


class EventRuleValuesSchema(Schema):
    points = _points(metadata={"description": "Points per event"})
    per_unit_property = fields.String(
        allow_none=True,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "A numeric property of the type, e.g. co2_kg"},
    )
    points_per_unit = _positive_decimal(
        6,
        'Points per unit of per_unit_property, e.g. "2" (the total is rounded down)',
        allow_none=True,
    )
    cap = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=1, max=10_000),
        metadata={"description": "At most this many rewarded events per member per cap_period"},
    )
    cap_period = fields.String(
        allow_none=True,
        validate=validate.OneOf(CAP_PERIODS),
        metadata={"description": "day or month, in the member's time zone"},
    )
    active = fields.Boolean()


def _set(name: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"not": {"type": "null"}}}}


def _with(first: str, second: str) -> dict[str, Any]:
    """Given ``first``: ``second`` is set when ``first`` is, absent or null when not."""
    return {
        "if": {"properties": {first: {"type": "null"}}},
        "then": {"properties": {second: {"type": "null"}}},
        "else": _set(second),
    }


class EventRuleCreateSchema(EventRuleValuesSchema):
    event_type = fields.String(required=True, validate=TYPE)

    class Meta:
        # per_unit_property with points_per_unit, cap with cap_period; and some points.
        json_schema = {
            "dependentSchemas": {
                "per_unit_property": _with("per_unit_property", "points_per_unit"),
                "points_per_unit": _with("points_per_unit", "per_unit_property"),
                "cap": _with("cap", "cap_period"),
                "cap_period": _with("cap_period", "cap"),
            },
            "not": {"properties": {"points": {"const": 0}, "points_per_unit": {"type": "null"}}},
        }


class EventRuleUpdateSchema(EventRuleValuesSchema):
    """Any of the rule's fields but its event type (checked as the rule will be after the
    change)."""


class EventRuleSchema(Schema):
    id = fields.String(required=True)
    event_type = fields.String(required=True)
    points = fields.Integer(required=True)
    per_unit_property = fields.String(required=True, allow_none=True)
    points_per_unit = _decimal_out(required=True, allow_none=True)
    cap = fields.Integer(required=True, allow_none=True)
    cap_period = fields.String(required=True, allow_none=True)
    active = fields.Boolean(required=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class EventRulePageSchema(PageSchema):
    items = fields.List(fields.Nested(EventRuleSchema), required=True)


# --- events ---------------------------------------------------------------------------------


class EventCreateSchema(Schema):
    event_id = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=100), _printable],
        metadata={"description": "Your id of the event: the same id counts once"},
    )
    member_id = fields.String(required=True, validate=validate.Length(min=1, max=40))
    type = fields.String(required=True, validate=TYPE)
    occurred_at = Timestamp(
        required=True,
        metadata={
            "description": "At most 5 minutes ahead of the server's clock and, by default, 30 "
            "days back (the programme's max_order_age_days)"
        },
    )
    properties = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=64)),
        values=fields.Raw(allow_none=True),
        validate=validate.Length(max=20),
        metadata={
            "description": "As the event type declares them",
            "maxProperties": 20,
            "json_schema": {"propertyNames": {"minLength": 1, "maxLength": 64}},
        },
    )


class CheckInCreateSchema(Schema):
    event_id = fields.String(
        validate=[validate.Length(min=1, max=100), _printable],
        metadata={"description": "Your id of the check-in (default: a new one)"},
    )
    occurred_at = Timestamp(
        metadata={"description": "Default: now; within the same bounds as an event's"}
    )


class AwardedLevelSchema(Schema):
    award_id = fields.String(required=True)
    badge_id = fields.String(required=True)
    name = fields.String(required=True)
    level = fields.Integer(required=True)
    level_name = fields.String(required=True)
    points = fields.Integer(required=True)


class StreakSchema(Schema):
    current = fields.Integer(required=True)
    longest = fields.Integer(required=True)
    counted = fields.Boolean(
        required=True, metadata={"description": "False when the local day was already counted"}
    )


class EventResultSchema(Schema):
    id = fields.String(required=True)
    event_id = fields.String(required=True)
    member_id = fields.String(required=True)
    type = fields.String(required=True)
    occurred_at = fields.String(required=True)
    properties = fields.Dict(required=True)
    points = fields.Integer(required=True, metadata={"description": "Points credited"})
    badges = fields.List(
        fields.Nested(AwardedLevelSchema),
        required=True,
        metadata={"description": "Badge levels awarded"},
    )
    streak = fields.Nested(
        StreakSchema, required=True, allow_none=True, metadata={"description": "check_in only"}
    )
    balance = fields.Nested(BalanceSchema, required=True)


# --- badges ---------------------------------------------------------------------------------


class LevelSchema(Schema):
    name = fields.String(required=True, validate=[validate.Length(min=1, max=50), _printable])
    threshold = _positive_decimal(
        12, "The metric that reaches the level (events, days, money, ...)", required=True
    )
    bonus_points = _points(load_default=0)


class BadgeValuesSchema(Schema):
    name = fields.String(validate=[NAME, _printable])
    description = fields.String(validate=DESCRIPTION, allow_none=True)
    levels = fields.List(
        fields.Nested(LevelSchema),
        validate=validate.Length(min=1, max=10),
        metadata={
            "description": "Thresholds strictly increasing, names all different; each level "
            "is awarded once"
        },
    )
    starts_at = Timestamp(allow_none=True, metadata={"description": "A challenge's start"})
    ends_at = Timestamp(
        allow_none=True,
        metadata={"description": "A challenge's end (excluded), after starts_at"},
    )
    revoke_on_refund = fields.Boolean(
        metadata={"description": "Refunding the order that earned a level revokes it"}
    )
    active = fields.Boolean()


class BadgeCreateSchema(BadgeValuesSchema):
    name = fields.String(required=True, validate=[NAME, _printable])
    rule = fields.String(
        required=True,
        validate=validate.OneOf(BADGE_RULES),
        metadata={"description": "The metric: " + ", ".join(BADGE_RULES)},
    )
    event_type = fields.String(
        allow_none=True,
        validate=TYPE,
        metadata={"description": "event_count and property_sum: the type counted"},
    )
    property = fields.String(
        allow_none=True,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "property_sum: the numeric property summed"},
    )
    levels = fields.List(
        fields.Nested(LevelSchema),
        required=True,
        validate=validate.Length(min=1, max=10),
        metadata={
            "description": "Thresholds strictly increasing, names all different; each level "
            "is awarded once"
        },
    )

    class Meta:
        # event_count counts a type, property_sum sums a numeric property of a type, the
        # other rules name neither.
        json_schema = {
            "dependentSchemas": {
                "rule": {
                    "oneOf": [
                        {
                            "properties": {
                                "rule": {"const": "event_count"},
                                "property": {"type": "null"},
                            },
                            "allOf": [_set("event_type")],
                        },
                        {
                            "properties": {"rule": {"const": "property_sum"}},
                            "allOf": [_set("event_type"), _set("property")],
                        },
                        {
                            "properties": {
                                "rule": {"enum": [r for r in BADGE_RULES if r not in EVENT_RULES]},
                                "event_type": {"type": "null"},
                                "property": {"type": "null"},
                            }
                        },
                    ]
                }
            }
        }


class BadgeUpdateSchema(BadgeValuesSchema):
    """Any of the badge's fields but its rule, event type and property."""


class LevelOutSchema(Schema):
    name = fields.String(required=True)
    threshold = _decimal_out(required=True)
    bonus_points = fields.Integer(required=True)


class BadgeSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True, allow_none=True)
    rule = fields.String(required=True)
    event_type = fields.String(required=True, allow_none=True)
    property = fields.String(required=True, allow_none=True)
    levels = fields.List(fields.Nested(LevelOutSchema), required=True)
    starts_at = Timestamp(required=True, allow_none=True)
    ends_at = Timestamp(required=True, allow_none=True)
    revoke_on_refund = fields.Boolean(required=True)
    active = fields.Boolean(required=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class BadgeQuerySchema(PageQuerySchema):
    active = fields.Boolean(metadata={"description": "Only active (true) or inactive (false)"})


class BadgePageSchema(PageSchema):
    items = fields.List(fields.Nested(BadgeSchema), required=True)


class AwardSchema(Schema):
    id = fields.String(required=True)
    badge_id = fields.String(required=True)
    level = fields.Integer(required=True)
    level_name = fields.String(required=True)
    points = fields.Integer(required=True, metadata={"description": "Bonus points given"})
    awarded_at = Timestamp(required=True)
    revoked_at = Timestamp(required=True, allow_none=True)


class NextLevelSchema(Schema):
    level = fields.Integer(required=True)
    name = fields.String(required=True)
    threshold = _decimal_out(required=True)
    remaining = _decimal_out(required=True)
    bonus_points = fields.Integer(required=True)


class StandingSchema(Schema):
    badge_id = fields.String(required=True)
    name = fields.String(required=True)
    rule = fields.String(required=True)
    value = _decimal_out(required=True)
    level = fields.Integer(required=True, metadata={"description": "Highest level reached; 0"})
    next_level = fields.Nested(NextLevelSchema, required=True, allow_none=True)


class MemberBadgesSchema(Schema):
    earned = fields.List(fields.Nested(AwardSchema), required=True)
    progress = fields.List(fields.Nested(StandingSchema), required=True)


# --- leaderboards ---------------------------------------------------------------------------


class LeaderboardQuerySchema(Schema):
    limit = fields.Integer(load_default=10, validate=validate.Range(min=1, max=MAX_PAGE_SIZE))


class LeaderboardEntrySchema(Schema):
    rank = fields.Integer(required=True)
    display_name = fields.String(required=True)
    value = _decimal_out(required=True)


class LeaderboardSchema(Schema):
    items = fields.List(fields.Nested(LeaderboardEntrySchema), required=True)


class LeaderboardProfileUpdateSchema(Schema):
    opted_in = fields.Boolean(required=True)
    display_name = fields.String(
        allow_none=True,
        validate=[validate.Length(min=1, max=50), _printable],
        metadata={"description": "Needed to opt in"},
    )

    class Meta:
        json_schema = {
            "if": {"properties": {"opted_in": {"const": True}}},
            "then": _set("display_name"),
        }


class LeaderboardProfileSchema(Schema):
    member_id = fields.String(required=True)
    opted_in = fields.Boolean(required=True)
    display_name = fields.String(required=True, allow_none=True)
