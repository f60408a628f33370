"""Request and response bodies of the member calls."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates

from loyalty import clock
from loyalty.api import PageQuerySchema, PageSchema, Timestamp
from loyalty.members import rules

# Clocks drift: an enrolment time this far in the future is still accepted.
CLOCK_SKEW = dt.timedelta(minutes=5)


def _no_control_chars(value: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError("Must not contain control characters.")


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
        allow_none=True, validate=[validate.Length(min=1, max=rules.NAME_MAX), _no_control_chars]
    )


def _birthday() -> fields.Date:
    return fields.Date(allow_none=True, validate=_check_birthday)


def _timezone() -> fields.String:
    return fields.String(
        validate=_check_time_zone,
        metadata={"description": "IANA time zone, used for birthdays and daily streaks"},
    )


def _metadata() -> fields.Dict:
    return fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=64)),
        validate=_check_metadata,
        metadata={"description": "Free-form storefront data (device id, card hash...)"},
    )


class MemberCreateSchema(Schema):
    external_id = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=rules.EXTERNAL_ID_MAX), _no_control_chars],
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
    enrolled_at = Timestamp(metadata={"description": "Defaults to now; may be in the past"})
    metadata = _metadata()

    @validates("enrolled_at")
    def _not_in_future(self, value: dt.datetime, **_: Any) -> None:
        if value > clock.now() + CLOCK_SKEW:
            raise ValidationError("Must not be in the future.")

    @validates("external_id")
    def _not_blank(self, value: str, **_: Any) -> None:
        if not value.strip():
            raise ValidationError("Must not be blank.")


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
