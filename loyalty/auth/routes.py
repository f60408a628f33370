"""Token endpoint: client credentials in, short-lived bearer JWT out."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from loyalty.api import Api, Blueprint, require_json_body
from loyalty.auth import service
from loyalty.auth.schemas import TokenRequestSchema, TokenSchema
from loyalty.db import get_session

blp = Blueprint("auth", __name__, url_prefix="/v1/auth", description="Access tokens")

_REQUEST_SCHEMA = {"$ref": "#/components/schemas/TokenRequest"}


@blp.route("/token")
class Token(MethodView):
    @blp.public
    @blp.doc(
        requestBody={
            "required": True,
            # OAuth 2 form posts (application/x-www-form-urlencoded) are accepted too; listing
            # both content types here breaks common client generators.
            "content": {"application/json": {"schema": _REQUEST_SCHEMA}},
        }
    )
    @blp.response(200, TokenSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    @blp.errors(400, 403, 415)
    def post(self) -> Any:
        """Get an access token with client credentials (JSON, or an OAuth 2 form post)."""
        require_json_body(accept_form=True)
        args = blp.ARGUMENTS_PARSER.parse(TokenRequestSchema(), location="json_or_form")
        grant = service.issue_token(
            get_session(),
            client_id=args["client_id"],
            client_secret=args["client_secret"],
            scope=args.get("scope"),
        )
        return grant


def register(api: Api) -> None:
    """Register the blueprint and the request schema its manual request body refers to."""
    api.spec.components.schema("TokenRequest", schema=TokenRequestSchema)
    api.register_blueprint(blp)
