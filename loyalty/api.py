"""The HTTP API's frame: flask-smorest set up for problem+json, scoped blueprints, cursor
pagination, request guards, the docs and the health check."""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import http
import json
from collections.abc import Callable
from functools import wraps
from typing import Any, Protocol
from urllib.parse import quote

import flask_smorest
import swagger_ui_bundle
from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter
from flask import Flask, g, request, send_from_directory
from flask.views import MethodView
from flask_smorest.utils import prepare_response
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import text
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    RequestURITooLarge,
    UnsupportedMediaType,
)

from loyalty import problems
from loyalty.db import get_session
from loyalty.idempotency import HEADER as IDEMPOTENCY_HEADER
from loyalty.idempotency import idempotent
from loyalty.jsonbody import StrictParser
from loyalty.ports import Port

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
BEARER_SCHEME = "bearerAuth"
MIN_YEAR, MAX_YEAR = 1900, 9998
FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# The longest request target (path and query string, as sent) the API reads; a longer one is
# 414 uri-too-long. HTTP servers have limits of their own: gunicorn.conf.py lifts gunicorn's
# (4094 bytes, answered with an HTML page) so that this one answers.
MAX_URL_LENGTH = 4096
# Keys the client chooses: printable ASCII, no space at either end (HTTP trims it).
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$"
# Free text the API stores and shows: anything but control characters (C0, DEL, C1).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
# The same, with at least one character that is not white space.
NOT_BLANK_TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
# RFC 3339 timestamps as the API reads them: seconds 00 to 59, and in UTC the years 1900 to
# 9998, so 1900 only with a UTC or negative offset and 9998 with a UTC or positive one.
_REST = (
    r"-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
)
_HOURS = r"([01][0-9]|2[0-3]):[0-5][0-9]"
TIMESTAMP_PATTERN = (
    rf"^((19(0[1-9]|[1-9][0-9])|[2-8][0-9]{{3}}|9[0-8][0-9]{{2}}|99[0-8][0-9]|999[0-7])"
    rf"{_REST}(Z|[+-]{_HOURS})"
    rf"|1900{_REST}(Z|[+-]00:00|-{_HOURS})"
    rf"|9998{_REST}(Z|[+-]00:00|\+{_HOURS}))$"
)
# Cursors are unpadded base64url.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"


def positive_decimal_pattern(digits: int, *, above_one: bool = False) -> str:
    """A decimal string with at most 4 places, above 0 (or above 1) and at most 10**digits:
    what a ``Decimal(places=4)`` field between those bounds accepts once rounded."""
    top = "1" + "0" * digits + r"(\.0{1,4})?"
    if above_one:
        low = r"1\.[0-9]{0,3}[1-9]|[2-9](\.[0-9]{1,4})?"
        rest = rf"[1-9][0-9]{{1,{digits - 1}}}(\.[0-9]{{1,4}})?" if digits > 1 else ""
    else:
        low = r"0\.[0-9]{0,3}[1-9]"
        rest = rf"[1-9][0-9]{{0,{digits - 1}}}(\.[0-9]{{1,4}})?"
    return "^(" + "|".join(part for part in (low, rest, top) if part) + ")$"


def decimal_schema(
    pattern: str, minimum: float, maximum: float, *, nullable: bool = False
) -> dict[str, Any]:
    """Field metadata for a decimal read from a JSON number or a string: the number's range
    (bounds as the 4-place rounding keeps them), the string's pattern."""
    branches: list[dict[str, Any]] = [
        {"type": "number", "minimum": minimum, "maximum": maximum},
        {"type": "string", "pattern": pattern},
    ]
    if nullable:
        branches.append({"type": "null"})
    return {"type": ["number", "string"], "anyOf": branches}


class Pattern(validate.Regexp):
    """A regular expression the whole value must match (``validate.Regexp`` only anchors the
    start, and ``$`` lets a trailing newline through); apispec writes it as the ``pattern``."""

    def __call__(self, value: Any) -> Any:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def free_text(*, blank: bool = True) -> Pattern:
    """Free text: no control characters; with ``blank=False``, not only white space."""
    if blank:
        return Pattern(TEXT_PATTERN, error="Must not contain control characters.")
    return Pattern(NOT_BLANK_TEXT_PATTERN, error="Must not be blank or contain control characters.")


# Named schemas that fields share through `component` (ISO 4217 codes, IANA time zones...).
_COMPONENTS: dict[str, dict[str, Any]] = {}


def component(name: str, schema: dict[str, Any], *, nullable: bool = False) -> dict[str, Any]:
    """Register ``schema`` as ``#/components/schemas/<name>`` and return the field metadata
    that refers to it (or to null, with ``nullable``)."""
    _COMPONENTS[name] = schema
    ref = {"$ref": f"#/components/schemas/{name}"}
    if nullable:
        return {"anyOf": [ref, {"type": "null"}]}
    return {"allOf": [ref]}


class SchemaConverter(OpenAPIConverter):
    """apispec's converter, plus the JSON Schema keywords apispec does not write: a field's
    ``metadata["json_schema"]`` (``propertyNames``, say) and a schema's ``Meta.json_schema``,
    the rules across fields that marshmallow or the service check in code.

    Object-level rules use ``dependentRequired``, ``dependentSchemas``, ``if``/``then``/
    ``else`` and ``not`` only: client generators read a top-level ``oneOf``, ``anyOf`` or
    ``allOf`` as a union of models (openapi-python-client then loses the request model) and
    leave these keywords to validators."""

    def field2property(self, field: fields.Field) -> dict[str, Any]:
        result: dict[str, Any] = super().field2property(field)
        extra = field.metadata.get("json_schema")
        if extra:
            result.update(copy.deepcopy(extra))
        return result

    def schema2jsonschema(self, schema: Any) -> dict[str, Any]:
        result: dict[str, Any] = super().schema2jsonschema(schema)
        meta = getattr(schema, "Meta", None)
        extra = getattr(meta, "json_schema", None)
        if extra:
            result.update(copy.deepcopy(extra))
        return result


class SchemaPlugin(MarshmallowPlugin):
    Converter = SchemaConverter


# Authenticated operations with these methods honour Idempotency-Key (see `Blueprint.requires`).
STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
IDEMPOTENCY_KEY_PARAMETER = {
    "in": "header",
    "name": IDEMPOTENCY_HEADER,
    "required": False,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": IDEMPOTENCY_KEY_PATTERN,
    },
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


class Caller(Protocol):
    @property
    def client_id(self) -> str: ...


# Verify the request's bearer token carries the scope and name the caller (auth's
# `authenticate`, plugged in at app creation: auth's own routes are built on this module).
# Raises `AuthenticationError` (401) or `InsufficientScopeError` (403).
authenticate: Port[[str], Caller] = Port("api.authenticate")


def _caller_id() -> str:
    """The API client the current request authenticated as."""
    client_id: str = g.api_client_id
    return client_id


class Blueprint(flask_smorest.Blueprint):
    """A blueprint whose operations declare their scope and their error responses."""

    ARGUMENTS_PARSER = StrictParser()

    def requires(self, scope: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Require a bearer token carrying ``scope`` and a JSON body (if any); document the
        security and the 400, 401, 403 and 415 answers.

        A state-changing operation (a MethodView's ``post``, ``put``, ``patch`` or ``delete``)
        also honours ``Idempotency-Key`` once the caller is known: this is the one place
        where it is applied, so no route can forget it."""

        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            # A MethodView's methods are named after the HTTP methods they answer.
            state_changing = func.__name__.upper() in STATE_CHANGING_METHODS
            view = idempotent(func, caller=_caller_id) if state_changing else func

            @wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                g.api_client_id = authenticate(scope).client_id
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

    def created_or_replayed(
        self, schema: type[Schema] | Schema, *, created: str, replayed: str
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A POST keyed by the caller's natural key (``order_id``, ``refund_id``,
        ``event_id``, ``external_id``...): 201 with ``schema`` when it created something, 200
        with the first result when the same request came before. The view returns
        ``(result, created)``."""

        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            @wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> tuple[Any, int]:
                result, was_created = func(*args, **kwargs)
                return result, 201 if was_created else 200

            wrapper = self.alt_response(200, schema=schema, description=replayed, success=True)(
                wrapper
            )
            return self.response(201, schema, description=created)(wrapper)

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

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"pattern": CURSOR_PATTERN, **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)

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
    """An RFC 3339 UTC timestamp (``2026-11-22T10:00:00Z``); input must carry an offset and
    lie in the years 1900 to 9998 in UTC."""

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"pattern": TIMESTAMP_PATTERN, **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return self.rfc3339(value)

    @staticmethod
    def rfc3339(value: dt.datetime) -> str:
        """``value`` as this field dumps it (``2026-11-22T10:00:00Z``)."""
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


def _refuse_long_urls() -> None:
    """Refuse a request target longer than `MAX_URL_LENGTH` bytes with 414."""
    environ = request.environ
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if target is None:
        query = environ.get("QUERY_STRING", "")
        path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        target = path + ("?" + query if query else "")
    if len(target) > MAX_URL_LENGTH:
        raise RequestURITooLarge(
            f"The URL is {len(target)} bytes long; the API reads URLs of at most "
            f"{MAX_URL_LENGTH} bytes (path and query string)."
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
    api = Api(app, spec_kwargs={"marshmallow_plugin": SchemaPlugin()})
    api.register_field(Cursor, "string", None)
    for name, schema in sorted(_COMPONENTS.items()):
        api.spec.components.schema(name, schema)
    api.spec.components.security_scheme(
        BEARER_SCHEME,
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "Access token from POST /v1/auth/token",
        },
    )
    app.before_request(_refuse_long_urls)
    app.before_request(_refuse_nul_characters)
    app.add_url_rule("/docs/assets/<path:filename>", "docs_asset", _docs_asset)
    api.register_blueprint(meta)
    return api
