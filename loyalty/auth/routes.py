"""Token endpoint: client credentials in, short-lived bearer JWT out (OAuth 2, RFC 6749)."""

from __future__ import annotations

import http
import json
from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest.utils import prepare_response

from loyalty.api import Api, Blueprint, require_json_body
from loyalty.auth import service
from loyalty.auth.errors import MultipleClientAuthenticationError, UnsupportedGrantTypeError
from loyalty.auth.schemas import (
    OAuthProblemSchema,
    OAuthValidationProblemSchema,
    TokenRequestSchema,
    TokenSchema,
)
from loyalty.auth.security import basic_credentials
from loyalty.db import get_session
from loyalty.problems import PROBLEM_CONTENT_TYPE

blp = Blueprint("auth", __name__, url_prefix="/v1/auth", description="Access tokens")

_REQUEST_SCHEMA = {"$ref": "#/components/schemas/TokenRequest"}
BASIC_CHALLENGE = 'Basic realm="loyalty"'
GRANT_TYPE = "client_credentials"

# RFC 6749 section 5.2's error for each problem code; any other 4xx is invalid_request.
OAUTH_ERRORS = {
    "invalid-client": "invalid_client",
    "unsupported-grant-type": "unsupported_grant_type",
    "unknown-scope": "invalid_scope",
    "scope-not-granted": "invalid_scope",
}
# The problem responses this endpoint documents, with OAuth's members.
OAUTH_RESPONSES = (400, 401, 403, 415, 422)


@blp.route("/token")
class Token(MethodView):
    @blp.public
    @blp.doc(
        description="Client credentials go in an `Authorization: Basic` header (RFC 6749 "
        "section 2.3.1, what OAuth 2 libraries send by default; the body then needs neither "
        "`client_id` nor `client_secret`), or in the body as JSON or as an OAuth 2 form post "
        "(`application/x-www-form-urlencoded`). Errors carry OAuth's `error` member besides "
        "the problem's `code`.",
        requestBody={
            "required": True,
            # OAuth 2 form posts (application/x-www-form-urlencoded) are accepted too; listing
            # both content types here breaks client generators (openapi-python-client 0.29.1
            # writes a module that does not import).
            "content": {"application/json": {"schema": _REQUEST_SCHEMA}},
        },
    )
    @blp.response(200, TokenSchema)
    @blp.alt_response(400, response="OAUTH_BAD_REQUEST")
    @blp.alt_response(401, response="OAUTH_UNAUTHORIZED")
    @blp.alt_response(403, response="OAUTH_FORBIDDEN")
    @blp.alt_response(415, response="OAUTH_UNSUPPORTED_MEDIA_TYPE")
    @blp.alt_response(422, response="OAUTH_UNPROCESSABLE_ENTITY")
    def post(self) -> Any:
        """Get an access token with client credentials (HTTP Basic, JSON or an OAuth 2 form)."""
        require_json_body(accept_form=True)
        basic = basic_credentials()
        schema = TokenRequestSchema(partial=("client_id", "client_secret") if basic else ())
        args = blp.ARGUMENTS_PARSER.parse(schema, location="json_or_form")
        if args.get("grant_type", GRANT_TYPE) != GRANT_TYPE:
            raise UnsupportedGrantTypeError()
        if basic is None:
            client_id, client_secret = args["client_id"], args["client_secret"]
        elif "client_secret" in args or args.get("client_id", basic[0]) != basic[0]:
            raise MultipleClientAuthenticationError()
        else:
            client_id, client_secret = basic
        return service.issue_token(
            get_session(),
            client_id=client_id,
            client_secret=client_secret,
            scope=args.get("scope"),
        )


@blp.after_request
def speak_oauth(response: Response) -> Response:
    """Answer as RFC 6749 section 5 says: no caching, OAuth's ``error`` (and
    ``error_description``) in problem bodies, and a Basic challenge on a 401."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    if response.mimetype != PROBLEM_CONTENT_TYPE or not 400 <= response.status_code < 500:
        return response
    body = json.loads(response.get_data())
    body["error"] = OAUTH_ERRORS.get(body.get("code"), "invalid_request")
    body["error_description"] = body.get("detail", "")
    response.set_data(json.dumps(body))
    if response.status_code == 401:
        # The token endpoint authenticates clients with Basic, never with a bearer token.
        response.headers["WWW-Authenticate"] = BASIC_CHALLENGE
    return response


def register(api: Api) -> None:
    """Register the blueprint, the request schema its manual request body refers to, and its
    problem responses with OAuth's members."""
    api.spec.components.schema("TokenRequest", schema=TokenRequestSchema)
    for status in OAUTH_RESPONSES:
        schema = OAuthValidationProblemSchema if status == 422 else OAuthProblemSchema
        response: dict[str, Any] = {"description": http.HTTPStatus(status).phrase, "schema": schema}
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {
                    "description": f"The authentication scheme: {BASIC_CHALLENGE}",
                    "schema": {"type": "string"},
                }
            }
        prepare_response(response, api.spec, PROBLEM_CONTENT_TYPE)
        api.spec.components.response("OAUTH_" + http.HTTPStatus(status).name, response)
    api.register_blueprint(blp)
