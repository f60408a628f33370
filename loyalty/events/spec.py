"""The spec's ``webhooks`` (OpenAPI 3.1): one entry per outbound event type, documenting the
envelope with that type's ``data`` and the Standard Webhooks headers."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from marshmallow import Schema

from loyalty.events import catalogue
from loyalty.events.catalogue import CATALOGUE, PAYLOAD_VERSION

SIGNATURE_PATTERN = r"^v1,[A-Za-z0-9+/]+={0,2}( v1,[A-Za-z0-9+/]+={0,2})*$"
HEADERS: list[dict[str, Any]] = [
    {
        "in": "header",
        "name": "webhook-id",
        "required": True,
        "schema": {"type": "string"},
        "description": "The event's id: the same on every retry and replay of the event. "
        "Deliveries are at least once: skip an id you have already processed.",
    },
    {
        "in": "header",
        "name": "webhook-timestamp",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
        "description": "When this attempt was signed, in Unix seconds; refuse messages more "
        "than 5 minutes away from your clock (replayed captures).",
    },
    {
        "in": "header",
        "name": "webhook-signature",
        "required": True,
        "schema": {"type": "string", "pattern": SIGNATURE_PATTERN},
        "description": "`v1,` and the base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}."
        "{body}` keyed with the base64-decoded part of your secret after `whsec_`; during a "
        "secret rotation, two such signatures separated by a space: accept the message when "
        "any one matches.",
    },
]


def _component_name(schema: type[Schema]) -> str:
    return "Event" + schema.__name__


def _type_name(event_type: str) -> str:
    return "".join(part.capitalize() for part in event_type.replace("_", ".").split(".")) + "Event"


def document_webhooks(spec: APISpec) -> None:
    """Add the data schemas and one envelope per event type to ``spec``'s components, and the
    ``webhooks`` section that refers to them."""
    # The nested balance first, so the data schemas refer to it by this name.
    spec.components.schema(_component_name(catalogue.Balance), schema=catalogue.Balance)
    for data_schema in dict.fromkeys(schema for schema, _ in CATALOGUE.values()):
        spec.components.schema(_component_name(data_schema), schema=data_schema)
    webhooks: dict[str, Any] = {}
    for event_type, (data_schema, description) in CATALOGUE.items():
        name = _type_name(event_type)
        spec.components.schema(name, _envelope(event_type, data_schema, description))
        webhooks[event_type] = {
            "post": {
                "summary": description,
                "description": f"`{event_type}`: {description} Signed as Standard Webhooks "
                "specifies; see the headers.",
                "operationId": "webhook_" + event_type.replace(".", "_"),
                "tags": ["Webhook events"],
                "parameters": HEADERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                    },
                },
                "responses": {
                    "2XX": {
                        "description": "Received. Any other status, a redirect, or no answer "
                        "within 10 seconds is a failure, retried for up to 3 days."
                    }
                },
            }
        }
    spec.options["webhooks"] = webhooks


def _envelope(event_type: str, data_schema: type[Schema], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"The `{event_type}` event: {description}",
        "required": ["id", "type", "version", "occurred_at", "member_id", "data"],
        "properties": {
            "id": {
                "type": "string",
                "description": "The event's id, also sent as webhook-id (`evt_...`)",
            },
            "type": {"type": "string", "const": event_type},
            "version": {
                "type": "integer",
                "const": PAYLOAD_VERSION,
                "description": "The payload version: fields are only added within a version",
            },
            "occurred_at": {"type": "string", "format": "date-time"},
            "member_id": {
                "type": ["string", "null"],
                "description": "The member the event is about, if any",
            },
            "data": {"$ref": f"#/components/schemas/{_component_name(data_schema)}"},
        },
    }
