"""Request and response bodies of the webhook endpoint calls and the lifecycle settings."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from loyalty.api import PageQuerySchema, PageSchema, Pattern, Timestamp, free_text
from loyalty.events.rules import EVENT_TYPE_FILTERS, EXPIRING_SOON_DAYS, INACTIVE_DAYS

# --- the URL form the API accepts ----------------------------------------------------------
# http or https, a host name, an IPv4 address or a bracketed IPv6 address (RFC 3986's
# grammar), an optional port from 1 to 65535, then a path and query of printable ASCII
# without spaces or a fragment. Where the host may point is checked by the service.
_H16 = "[0-9A-Fa-f]{1,4}"
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"
_LS32 = rf"({_H16}:{_H16}|{_IPV4})"
_IPV6_TAILS = (
    rf"({_H16}:){{4}}{_LS32}",
    rf"({_H16}:){{3}}{_LS32}",
    rf"({_H16}:){{2}}{_LS32}",
    rf"{_H16}:{_LS32}",
    _LS32,
    _H16,
    "",
)
_IPV6 = "|".join(
    [
        rf"({_H16}:){{6}}{_LS32}",
        rf"::({_H16}:){{5}}{_LS32}",
        *(rf"(({_H16}:){{0,{before}}}{_H16})?::{tail}" for before, tail in enumerate(_IPV6_TAILS)),
    ]
)
_LABEL = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"({_LABEL}\.)*{_LABEL}|\[({_IPV6})\]"
_PORT = "[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]"
URL_PATTERN = rf"^https?://({_HOST})(:({_PORT}))?([/?][\x21\x22\x24-\x7e]*)?$"
MAX_URL_LENGTH = 2048
EVENT_ID_PATTERN = r"^[\x21-\x7e]+$"

_url = [
    validate.Length(min=1, max=MAX_URL_LENGTH),
    Pattern(
        URL_PATTERN,
        error="Must be an http:// or https:// URL: a host name or IP address, an optional "
        "port, a path of printable characters and no fragment.",
    ),
]
_URL_DESCRIPTION = (
    "Where events are POSTed: http or https; the host must resolve to public addresses "
    "(private, loopback and link-local ones are refused)."
)


def _url_field(**kwargs: Any) -> fields.String:
    return fields.String(validate=_url, metadata={"description": _URL_DESCRIPTION}, **kwargs)


def _event_types_field(**kwargs: Any) -> fields.List:
    return fields.List(
        fields.String(
            validate=validate.OneOf(
                EVENT_TYPE_FILTERS,
                error="Not an event type: name a type, a family such as points.*, or *.",
            )
        ),
        validate=validate.Length(min=1, max=100),
        metadata={
            "description": "The event types to receive: exact types (`points.accrued`), a "
            "family (`points.*`) or everything (`*`); the types are listed under `webhooks`."
        },
        **kwargs,
    )


class EndpointValuesSchema(Schema):
    """Fields an endpoint is created with and that can be changed later."""

    url = _url_field()
    event_types = _event_types_field()
    enabled = fields.Boolean(
        metadata={
            "description": "Whether events are delivered; true clears disabled_reason "
            "(default true)"
        }
    )
    description = fields.String(allow_none=True, validate=[validate.Length(max=500), free_text()])


class EndpointCreateSchema(EndpointValuesSchema):
    url = _url_field(required=True)
    event_types = _event_types_field(required=True)


class EndpointUpdateSchema(EndpointValuesSchema):
    pass


class EndpointSchema(Schema):
    id = fields.String(required=True)
    url = fields.String(required=True)
    event_types = fields.List(fields.String(), required=True)
    enabled = fields.Boolean(required=True)
    description = fields.String(required=True, allow_none=True)
    disabled_reason = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Why the endpoint was disabled automatically, if it was"},
    )
    previous_secret_expires_at = Timestamp(
        required=True,
        allow_none=True,
        metadata={"description": "Until when the previous secret also signs (after a rotation)"},
    )
    created_at = Timestamp(required=True)
    updated_at = Timestamp(required=True)


class EndpointWithSecretSchema(EndpointSchema):
    secret = fields.String(
        required=True,
        metadata={
            "description": "The signing secret (`whsec_` and base64): shown in this answer "
            "only, keep it now",
            "pattern": "^whsec_[A-Za-z0-9+/]+={0,2}$",
        },
    )


class EndpointQuerySchema(PageQuerySchema):
    enabled = fields.Boolean(metadata={"description": "Only enabled (or disabled) endpoints"})


class EndpointPageSchema(PageSchema):
    items = fields.List(fields.Nested(EndpointSchema), required=True)


class RotateSecretSchema(Schema):
    overlap_seconds = fields.Integer(
        strict=True,
        validate=validate.Range(min=0, max=7 * 24 * 3600),
        metadata={
            "description": "How long the previous secret goes on signing beside the new one "
            "(seconds, default 86400; 0: stop at once)"
        },
    )


class AttemptSchema(Schema):
    id = fields.String(required=True)
    event_id = fields.String(required=True, metadata={"description": "The webhook-id sent"})
    event_type = fields.String(required=True)
    attempt = fields.Integer(required=True, metadata={"description": "1 for the first attempt"})
    replay = fields.Boolean(required=True, metadata={"description": "Sent by a replay"})
    attempted_at = Timestamp(required=True)
    succeeded = fields.Boolean(required=True)
    status_code = fields.Integer(
        required=True, allow_none=True, metadata={"description": "null: no HTTP answer"}
    )
    duration_ms = fields.Integer(required=True)
    response_excerpt = fields.String(
        required=True, allow_none=True, metadata={"description": "The answer's first 1000 chars"}
    )
    error = fields.String(required=True, allow_none=True)
    next_attempt_at = Timestamp(
        required=True,
        allow_none=True,
        metadata={"description": "When it is tried again; null once delivered or given up"},
    )


class AttemptPageSchema(PageSchema):
    items = fields.List(fields.Nested(AttemptSchema), required=True)


class ReplaySchema(Schema):
    """One event by id, or the endpoint's events recorded in a time range."""

    class Meta:
        json_schema: dict[str, Any] = {
            "if": {"required": ["event_id"]},
            "then": {"not": {"anyOf": [{"required": ["since"]}, {"required": ["until"]}]}},
            "else": {"required": ["since"]},
        }

    event_id = fields.String(
        validate=[validate.Length(min=1, max=40), Pattern(EVENT_ID_PATTERN)],
        metadata={"description": "The event to send again (any type)"},
    )
    since = Timestamp(
        metadata={"description": "Send again the endpoint's events recorded from this moment"}
    )
    until = Timestamp(
        metadata={"description": "... up to (not including) this one; default: no end"}
    )

    @validates_schema
    def _one_way(self, data: dict[str, Any], **_: Any) -> None:
        if "event_id" in data:
            for name in ("since", "until"):
                if name in data:
                    raise ValidationError("Give event_id, or since and until, not both.", name)
        elif "since" not in data:
            raise ValidationError("Give event_id, or since (and until).", "since")
        elif "until" in data and data["until"] <= data["since"]:
            raise ValidationError("Must be after since.", "until")


class ReplayResultSchema(Schema):
    queued = fields.Integer(required=True, metadata={"description": "Events queued again"})


# --- lifecycle triggers' settings ----------------------------------------------------------

_SWITCHES = {
    "first_order_enabled": "Send `lifecycle.first_order` when a member's first order opens "
    "its 72-hour care window",
    "expiring_soon_enabled": "Send `points.expiring_soon` expiring_soon_days before points expire",
    "birthday_enabled": "Send `member.birthday` when a member's birthday begins in their time zone",
    "inactive_enabled": "Send `member.inactive` after inactive_days without activity",
}
_EXPIRING_SOON_DAYS = (
    f"Days of notice before points expire, {EXPIRING_SOON_DAYS[0]} to {EXPIRING_SOON_DAYS[1]}"
)
_INACTIVE_DAYS = f"Days without activity, {INACTIVE_DAYS[0]} to {INACTIVE_DAYS[1]}"


class LifecycleSettingsSchema(Schema):
    first_order_enabled = fields.Boolean(
        required=True, metadata={"description": _SWITCHES["first_order_enabled"]}
    )
    expiring_soon_enabled = fields.Boolean(
        required=True, metadata={"description": _SWITCHES["expiring_soon_enabled"]}
    )
    birthday_enabled = fields.Boolean(
        required=True, metadata={"description": _SWITCHES["birthday_enabled"]}
    )
    inactive_enabled = fields.Boolean(
        required=True, metadata={"description": _SWITCHES["inactive_enabled"]}
    )
    expiring_soon_days = fields.Integer(
        required=True, metadata={"description": _EXPIRING_SOON_DAYS}
    )
    inactive_days = fields.Integer(required=True, metadata={"description": _INACTIVE_DAYS})
    updated_at = Timestamp(required=True)
    updated_by = fields.String(
        required=True, allow_none=True, metadata={"description": "The API client that changed them"}
    )


class LifecycleSettingsUpdateSchema(Schema):
    """The settings to change; the others stay as they are."""

    first_order_enabled = fields.Boolean(metadata={"description": _SWITCHES["first_order_enabled"]})
    expiring_soon_enabled = fields.Boolean(
        metadata={"description": _SWITCHES["expiring_soon_enabled"]}
    )
    birthday_enabled = fields.Boolean(metadata={"description": _SWITCHES["birthday_enabled"]})
    inactive_enabled = fields.Boolean(metadata={"description": _SWITCHES["inactive_enabled"]})
    expiring_soon_days = fields.Integer(
        strict=True,
        validate=validate.Range(min=EXPIRING_SOON_DAYS[0], max=EXPIRING_SOON_DAYS[1]),
        metadata={"description": _EXPIRING_SOON_DAYS},
    )
    inactive_days = fields.Integer(
        strict=True,
        validate=validate.Range(min=INACTIVE_DAYS[0], max=INACTIVE_DAYS[1]),
        metadata={"description": _INACTIVE_DAYS},
    )
