"""Request and response bodies of the token endpoint."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


class TokenRequestSchema(Schema):
    grant_type = fields.String(
        validate=validate.OneOf(["client_credentials"]),
        metadata={"description": "Always client_credentials (required by OAuth 2 form posts)"},
    )
    client_id = fields.String(required=True, validate=validate.Length(min=1, max=200))
    client_secret = fields.String(required=True, validate=validate.Length(min=1, max=200))
    scope = fields.String(
        validate=validate.Length(max=1000),
        metadata={"description": "Space-separated scopes to narrow the token to"},
    )


class TokenSchema(Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"description": "Always Bearer"})
    expires_in = fields.Integer(required=True, metadata={"description": "Lifetime in seconds"})
    scope = fields.String(required=True, metadata={"description": "Space-separated scopes"})
