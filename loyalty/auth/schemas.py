"""Request and response bodies of the token endpoint."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from loyalty.problems import ProblemSchema, ValidationProblemSchema


class TokenRequestSchema(Schema):
    # Checked by the route: another grant type is OAuth's unsupported_grant_type (400).
    grant_type = fields.String(
        validate=validate.Length(max=100),
        metadata={
            "enum": ["client_credentials"],
            "description": "Always client_credentials (required by OAuth 2 form posts)",
        },
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


OAUTH_ERROR_CODES = ["invalid_request", "invalid_client", "unsupported_grant_type", "invalid_scope"]


class OAuthErrorMixin(Schema):
    error = fields.String(
        required=True,
        validate=validate.OneOf(OAUTH_ERROR_CODES),
        metadata={"description": "OAuth 2's error code (RFC 6749 section 5.2)"},
    )
    error_description = fields.String(required=True, metadata={"description": "The detail"})


class OAuthProblemSchema(ProblemSchema, OAuthErrorMixin):
    """A problem of the token endpoint, with OAuth 2's members."""


class OAuthValidationProblemSchema(ValidationProblemSchema, OAuthErrorMixin):
    """A token request's invalid fields, with OAuth 2's members."""
