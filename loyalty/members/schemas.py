"""Request and response bodies of the member calls."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates

from loyalty import clock
from loyalty.api import PageQuerySchema, PageSchema, Timestamp, component, free_text
from loyalty.members import rules

# Clocks drift: an enrolment time this far in the future is still accepted.
CLOCK_SKEW = dt.timedelta(minutes=5)
# Birthdays as written: 1900 to 2099 (and not after today, which the server checks).
BIRTHDAY_PATTERN = r"^(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"


def _constant_name(zone: str) -> str:
    """A name for a generated client's enum member: Etc/GMT+1 is ETC_GMT_PLUS_1."""
    name = re.sub(r"\+(?=[0-9])", "_PLUS_", zone)
    name = re.sub(r"-(?=[0-9])", "_MINUS_", name)
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper()


_ZONES = sorted(rules.time_zones())
TIME_ZONE = component(
    "TimeZone",
    {
        "type": "string",
        "enum": _ZONES,
        # GMT0, GMT+0 and GMT-0 would otherwise make one name in generated clients.
        "x-enum-varnames": [_constant_name(zone) for zone in _ZONES],
        "description": "An IANA time zone name, as the tzdata package lists them",
    },
)
METADATA_KEY = validate.Length(min=1, max=64)


def _check_time_zone(value: str) -> None:
    if not rules.is_time_zone(value):
        raise ValidationError("Not an IANA time zone name (e.g. Europe/Paris).")


def _check_birthday(value: dt.date) -> None:
    if not rules.OLDEST_BIRTHDAY <= value <= dt.date.today():
        raise ValidationError(f"Must be between {rules.OLDEST_BIRTHDAY} and today.")


def _check_metadata(value: dict[str, Any]) -> None:
    if len(value) > rules.METADATA_MAX_KEYS:
        raise ValidationError(f"At most {rules.METADATA_MAX_KEYS} keys.")
    if len(json.dumps(value)) > rules.METADATA_MAX_BYTES:
        raise ValidationError(f"At most {rules.METADATA_MAX_BYTES} bytes of JSON.")


class LowerCaseEmail(fields.Email):
    """An email address, lower-cased before its length is checked (case folding can grow it)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        result = super()._deserialize(value, attr, data, **kwargs)
        return result.lower() if isinstance(result, str) else result


def _email() -> fields.Email:
    return LowerCaseEmail(
        allow_none=True,
        validate=validate.Length(max=rules.EMAIL_MAX),
        metadata={"description": "Stored in lower case"},
    )


def _name() -> fields.String:
    return fields.String(
        allow_none=True, validate=[validate.Length(min=1, max=rules.NAME_MAX), free_text()]
    )


def _birthday() -> fields.Date:
    return fields.Date(
        allow_none=True,
        validate=_check_birthday,
        metadata={
            "description": f"From {rules.OLDEST_BIRTHDAY} to today",
            "pattern": BIRTHDAY_PATTERN,
        },
    )


def _timezone() -> fields.String:
    return fields.String(
        validate=_check_time_zone,
        metadata={
            "description": "IANA time zone, used for birthdays and daily streaks",
            **TIME_ZONE,
        },
    )


def _metadata() -> fields.Dict:
    return fields.Dict(
        keys=fields.String(validate=METADATA_KEY),
        validate=_check_metadata,
        metadata={
            "description": "Free-form storefront data (device id, card hash...): at most "
            f"{rules.METADATA_MAX_KEYS} keys and {rules.METADATA_MAX_BYTES} bytes of JSON",
            "maxProperties": rules.METADATA_MAX_KEYS,
            "json_schema": {"propertyNames": {"minLength": 1, "maxLength": 64}},
        },
    )


class MemberCreateSchema(Schema):
    external_id = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=rules.EXTERNAL_ID_MAX), free_text(blank=False)],
        metadata={"description": "The storefront's own customer id; enrolment is idempotent on it"},
    )
    email = _email()
    name = _name()
    birthday = _birthday()
    timezone = _timezone()
    referral_code = fields.String(
        validate=validate.Length(min=1, max=32),
        metadata={"description": "Referral code of the member who invited this one"},
    )
    marketing_consent = fields.Boolean()
    enrolled_at = Timestamp(
        metadata={"description": "Defaults to now; may be in the past, not in the future"}
    )
    metadata = _metadata()

    @validates("enrolled_at")
    def _not_in_future(self, value: dt.datetime, **_: Any) -> None:
        if value > clock.now() + CLOCK_SKEW:
            raise ValidationError("Must not be in the future.")


class MemberUpdateSchema(Schema):
    email = _email()
    name = _name()
    birthday = _birthday()
    timezone = _timezone()
    marketing_consent = fields.Boolean()
    status = fields.String(validate=validate.OneOf(rules.STATUSES))
    metadata = _metadata()


class MemberQuerySchema(PageQuerySchema):
    external_id = fields.String(validate=validate.Length(min=1, max=rules.EXTERNAL_ID_MAX))
    email = fields.String(validate=validate.Length(min=1, max=rules.EMAIL_MAX))
    status = fields.String(validate=validate.OneOf(rules.STATUSES))
    referral_code = fields.String(validate=validate.Length(min=1, max=32))
    enrolled_after = Timestamp(metadata={"description": "Enrolled at or after this time"})
    enrolled_before = Timestamp(metadata={"description": "Enrolled before this time"})


class PointsSchema(Schema):
    available = fields.Integer(required=True)
    pending = fields.Integer(required=True)
    held = fields.Integer(required=True)
    lifetime_earned = fields.Integer(required=True)


class TierRefSchema(Schema):
    code = fields.String(required=True)
    name = fields.String(required=True)


class MemberSchema(Schema):
    id = fields.String(required=True)
    external_id = fields.String(required=True)
    email = fields.String(required=True, allow_none=True)
    name = fields.String(required=True, allow_none=True)
    birthday = fields.Date(required=True, allow_none=True)
    timezone = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(rules.STATUSES))
    tier = fields.Nested(TierRefSchema, required=True, allow_none=True)
    points = fields.Nested(PointsSchema, required=True)
    referral_code = fields.String(required=True)
    referrer_id = fields.String(
        required=True, allow_none=True, metadata={"description": "Member who referred this one"}
    )
    marketing_consent = fields.Boolean(required=True)
    metadata = fields.Dict(required=True, attribute="metadata_")
    enrolled_at = Timestamp(required=True)
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class MemberPageSchema(PageSchema):
    items = fields.List(fields.Nested(MemberSchema), required=True)
