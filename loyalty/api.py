"""The HTTP API's frame: flask-smorest set up for problem+json, scoped blueprints, cursor
pagination, request guards, the docs and the health check."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import http
import json
from collections.abc import Callable
from functools import wraps
from typing import Any

import flask_smorest
import swagger_ui_bundle
from flask import Flask, current_app, request, send_from_directory
from flask.views import MethodView
from flask_smorest.utils import prepare_response
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import text
from werkzeug.exceptions import HTTPException, UnsupportedMediaType

from loyalty import problems
from loyalty.db import get_session

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
BEARER_SCHEME = "bearerAuth"
FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class Api(flask_smorest.Api):
    """flask-smorest's Api whose error responses are documented and sent as problem+json."""

    ERROR_SCHEMA = problems.ProblemSchema

    def _register_responses(self) -> None:
        for status in http.HTTPStatus:
            if status < 400:
                continue
            schema = problems.ValidationProblemSchema if status == 422 else problems.ProblemSchema
            response: dict[str, Any] = {"description": status.phrase, "schema": schema}
            if status == 401:
                response["headers"] = {
                    "WWW-Authenticate": {
                        "description": "The authentication scheme (Bearer)",
                        "schema": {"type": "string"},
                    }
                }
            prepare_response(response, self.spec, problems.PROBLEM_CONTENT_TYPE)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Unexpected error", "schema": problems.ProblemSchema}
        prepare_response(response, self.spec, problems.PROBLEM_CONTENT_TYPE)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, response, lazy=True)

    def handle_http_exception(self, error: HTTPException) -> Any:
        return problems.handle_http_exception(error)


class Blueprint(flask_smorest.Blueprint):
    """A blueprint whose operations declare their scope and their error responses."""

    def requires(self, scope: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Require a bearer token carrying ``scope``; document the security and 401/403."""
        from loyalty.auth.security import authenticate  # auth's routes use this module

        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            @wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                authenticate(scope)
                return func(*args, **kwargs)

            wrapper = self.doc(security=[{BEARER_SCHEME: [scope]}])(wrapper)
            wrapper = self.alt_response(401, response="UNAUTHORIZED")(wrapper)
            return self.alt_response(403, response="FORBIDDEN")(wrapper)

        return decorator

    def public(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Mark an operation as needing no token."""
        return self.doc(security=[])(func)

    def errors(self, *statuses: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Document the problem responses an operation can give besides 401, 403 and 422."""

        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            for status in statuses:
                func = self.alt_response(status, response=http.HTTPStatus(status).name)(func)
            return func

        return decorator


def accepts_form(func: Callable[..., Any]) -> Callable[..., Any]:
    """Let a view take an HTML form body as well as JSON (OAuth's token request does)."""
    func._accepts_form = True  # type: ignore[attr-defined]
    return func


# --- cursor pagination ---------------------------------------------------------------------


class Cursor(fields.Field):
    """An opaque cursor in the API; the sort key of the last item seen inside."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        raw = json.dumps({"after": value}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        after = None
        try:
            padded = str(value) + "=" * (-len(str(value)) % 4)
            after = json.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            pass
        if not isinstance(after, str):
            raise ValidationError("Not a valid cursor; pass next_cursor from the previous page.")
        return after


class PageQuerySchema(Schema):
    limit = fields.Integer(
        load_default=DEFAULT_PAGE_SIZE,
        validate=validate.Range(min=1, max=MAX_PAGE_SIZE),
        metadata={"description": f"Page size, 1 to {MAX_PAGE_SIZE}"},
    )
    cursor = Cursor(load_default=None, metadata={"description": "next_cursor of the previous page"})


class PageSchema(Schema):
    next_cursor = Cursor(
        required=True,
        allow_none=True,
        metadata={"description": "Cursor of the next page, or null on the last page"},
    )


class Timestamp(fields.DateTime):
    """An RFC 3339 UTC timestamp (``2026-11-22T10:00:00Z``); input must carry an offset."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return str(value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"))

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        result = super()._deserialize(value, attr, data, **kwargs)
        if result.tzinfo is None:
            raise ValidationError("Not a valid RFC 3339 timestamp: give a UTC offset or Z.")
        return result.astimezone(dt.UTC)


# --- request guards, docs, health ----------------------------------------------------------


def _require_json_body() -> None:
    """Refuse bodies that are not JSON (415) before a view tries to read them."""
    if request.method not in ("POST", "PUT", "PATCH") or not request.path.startswith("/v1/"):
        return
    has_body = bool(request.content_length) or request.headers.get("Transfer-Encoding")
    if not has_body or request.is_json:
        return
    view = current_app.view_functions.get(request.endpoint or "")
    view_class = getattr(view, "view_class", None)
    handler = getattr(view_class, request.method.lower(), view) if view_class else view
    if getattr(handler, "_accepts_form", False) and request.mimetype in FORM_CONTENT_TYPES:
        return
    raise UnsupportedMediaType(
        f"The body must be application/json, not {request.mimetype or 'untyped'}."
    )


meta = Blueprint("meta", __name__, url_prefix="/v1", description="Service health")


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"description": "ok"})
    database = fields.String(required=True, metadata={"description": "ok"})


@meta.route("/health")
class Health(MethodView):
    @meta.public
    @meta.response(200, HealthSchema)
    @meta.errors(503)
    def get(self) -> dict[str, str]:
        """Report whether the service and its database answer."""
        get_session().execute(text("SELECT 1"))
        return {"status": "ok", "database": "ok"}


def _docs_asset(filename: str) -> Any:
    return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename, max_age=86400)


def init_app(app: Flask) -> Api:
    """Create the Api, register the bearer scheme, the guards and the docs assets."""
    api = Api(app)
    api.register_field(Cursor, "string", None)
    api.spec.components.security_scheme(
        BEARER_SCHEME,
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "Access token from POST /v1/auth/token",
        },
    )
    app.before_request(_require_json_body)
    app.add_url_rule("/docs/assets/<path:filename>", "docs_asset", _docs_asset)
    api.register_blueprint(meta)
    return api
