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
from flask import Flask, request, send_from_directory
from flask.views import MethodView
from flask_smorest.utils import prepare_response
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import text
from werkzeug.exceptions import BadRequest, HTTPException, UnsupportedMediaType

from loyalty import problems
from loyalty.db import get_session
from loyalty.idempotency import HEADER as IDEMPOTENCY_HEADER
from loyalty.idempotency import idempotent
from loyalty.jsonbody import StrictParser

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
BEARER_SCHEME = "bearerAuth"
MIN_YEAR, MAX_YEAR = 1900, 9998
FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# Authenticated operations with these methods honour Idempotency-Key (see `Blueprint.requires`).
STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
IDEMPOTENCY_KEY_PARAMETER = {
    "in": "header",
    "name": IDEMPOTENCY_HEADER,
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Retry safely: the same key and request get the stored response again "
    "(header Idempotent-Replayed: true) and no second effect.",
}


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

    ARGUMENTS_PARSER = StrictParser()

    def requires(self, scope: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Require a bearer token carrying ``scope`` and a JSON body (if any); document the
        security and the 400, 401, 403 and 415 answers.

        A state-changing operation (a MethodView's ``post``, ``put``, ``patch`` or ``delete``)
        also honours ``Idempotency-Key`` once the caller is known: this is the one place
        where it is applied, so no route can forget it."""
        from loyalty.auth.security import authenticate  # auth's routes use this module

        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            # A MethodView's methods are named after the HTTP methods they answer.
            state_changing = func.__name__.upper() in STATE_CHANGING_METHODS
            view = idempotent(func) if state_changing else func

            @wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                authenticate(scope)
                require_json_body()
                return view(*args, **kwargs)

            wrapper = self.doc(security=[{BEARER_SCHEME: [scope]}])(wrapper)
            statuses = (400, 401, 403, 415) + ((409, 422) if state_changing else ())
            for status in statuses:
                wrapper = self.alt_response(status, response=http.HTTPStatus(status).name)(wrapper)
            if state_changing:
                wrapper = self.doc(parameters=[IDEMPOTENCY_KEY_PARAMETER])(wrapper)
            return wrapper

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
        if not isinstance(after, str) or not after.isprintable():
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
        try:
            utc = result.astimezone(dt.UTC)
        except OverflowError:
            utc = None
        if utc is None or not MIN_YEAR <= utc.year <= MAX_YEAR:
            raise ValidationError(f"Must be between the years {MIN_YEAR} and {MAX_YEAR}.")
        return utc


# --- request guards, docs, health ----------------------------------------------------------


def require_json_body(*, accept_form: bool = False) -> None:
    """Refuse a body that is not JSON (or, where allowed, an HTML form) with 415."""
    has_body = bool(request.content_length) or request.headers.get("Transfer-Encoding")
    if not has_body or request.is_json:
        return
    if accept_form and request.mimetype in FORM_CONTENT_TYPES:
        return
    raise UnsupportedMediaType(
        f"The body must be application/json, not {request.mimetype or 'untyped'}."
    )


def _refuse_nul_characters() -> None:
    """NUL cannot be stored in PostgreSQL text; refuse it in paths, queries and forms."""
    values = [request.path, *request.args.keys(), *request.args.values()]
    if request.mimetype in FORM_CONTENT_TYPES and request.method == "POST":
        values += [*request.form.keys(), *request.form.values()]
    if any("\x00" in value for value in values):
        raise BadRequest("NUL characters are not allowed in the URL or form fields.")


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
    app.before_request(_refuse_nul_characters)
    app.add_url_rule("/docs/assets/<path:filename>", "docs_asset", _docs_asset)
    api.register_blueprint(meta)
    return api
