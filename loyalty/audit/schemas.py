"""Bodies of the audit trail calls."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from loyalty.api import PageQuerySchema, PageSchema, Timestamp


class AuditRecordSchema(Schema):
    id = fields.String(required=True)
    at = Timestamp(required=True)
    actor = fields.String(required=True, metadata={"description": "API client or console user"})
    action = fields.String(required=True, metadata={"description": "created, updated, deleted..."})
    entity_type = fields.String(required=True, metadata={"description": "e.g. tier, campaign"})
    entity_id = fields.String(required=True)
    before = fields.Dict(required=True, allow_none=True)
    after = fields.Dict(required=True, allow_none=True)
    reason = fields.String(required=True, allow_none=True)


class AuditQuerySchema(PageQuerySchema):
    entity_type = fields.String(validate=validate.Length(min=1, max=32))
    entity_id = fields.String(validate=validate.Length(min=1, max=128))
    actor = fields.String(validate=validate.Length(min=1, max=64))


class AuditPageSchema(PageSchema):
    items = fields.List(fields.Nested(AuditRecordSchema), required=True)
