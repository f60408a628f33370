"""The one place that turns errors into RFC 9457 ``application/problem+json`` responses."""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Flask, Response, current_app, request
from marshmallow import Schema, fields
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError
from werkzeug.exceptions import HTTPException

from loyalty import errors
from loyalty.db import constraint_name

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
# The longest `instance` (the request's path) echoed in a problem about an over-long URL.
INSTANCE_MAX = 256
WWW_AUTHENTICATE = 'Bearer realm="loyalty"'

# Domain error classes to HTTP statuses; the most specific class listed wins.
STATUS_BY_ERROR: dict[type[errors.LoyaltyError], int] = {
    errors.BadRequestError: 400,
    errors.AuthenticationError: 401,
    errors.PermissionDeniedError: 403,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.RuleViolationError: 422,
    errors.ServiceUnavailableError: 503,
}

# Problem slugs for werkzeug's HTTP errors where the status name alone is not telling.
HTTP_CODES = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    414: "uri-too-long",
    415: "unsupported-media-type",
    422: "validation-failed",
    429: "rate-limited",
    500: "internal-error",
}

# Unique constraints whose violation is a client's conflict rather than a bug, by the name the
# metadata naming convention gives them: (code, title, detail).
CONSTRAINT_CONFLICTS: dict[str, tuple[str, str, str]] = {
    "uq_members_external_id": (
        "member-exists",
        "Member already exists",
        "Another member already has this external_id.",
    ),
    # Two reports of one order (or refund) with different data, racing on different members.
    "uq_orders_channel_id_order_id": (
        "order-conflict",
        "Order already reported with other data",
        "This order_id was reported at the same time with a different body.",
    ),
    "uq_refunds_channel_id_refund_id": (
        "refund-conflict",
        "Refund already reported with other data",
        "This refund_id was reported at the same time with a different body or order.",
    ),
}


class ProblemSchema(Schema):
    """An RFC 9457 problem; error-specific data are extra top-level members."""

    class Meta:
        unknown = "include"

    type = fields.String(required=True, metadata={"description": "URI identifying the problem"})
    code = fields.String(required=True, metadata={"description": "Stable slug to match on"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    instance = fields.String(required=True, metadata={"description": "Path of the request"})


class FieldErrorSchema(Schema):
    pointer = fields.String(
        required=True, metadata={"description": "JSON pointer to the field, e.g. #/email"}
    )
    detail = fields.String(required=True)
    parameter = fields.String(metadata={"description": "Name of the query or path parameter"})
    in_ = fields.String(data_key="in", metadata={"description": "query, path or header"})


class ValidationProblemSchema(ProblemSchema):
    """A problem listing every invalid field."""

    errors = fields.List(fields.Nested(FieldErrorSchema), required=True)


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """Build a problem+json response."""
    body: dict[str, Any] = {
        "type": current_app.config["PROBLEM_TYPE_BASE"] + code,
        "code": code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path,
    }
    body.update(extra)
    response = current_app.response_class(
        json.dumps(body, default=str), status=status, mimetype=PROBLEM_CONTENT_TYPE
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def status_for(error: errors.LoyaltyError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def handle_domain_error(error: errors.LoyaltyError) -> Response:
    status = status_for(error)
    headers = {}
    token_errors = (errors.InvalidTokenError, errors.TokenExpiredError, errors.TokenRevokedError)
    if isinstance(error, token_errors):
        headers["WWW-Authenticate"] = f'{WWW_AUTHENTICATE}, error="invalid_token"'
    extra = dict(error.data)
    if status == 422:
        # Every 422 lists what is wrong, pointing at the field when the error names one.
        pointer = "#/" + error.field if error.field else "#"
        extra["errors"] = [{"pointer": pointer, "detail": error.detail}]
    return problem_response(status, error.code, error.title, error.detail, headers=headers, **extra)


def handle_http_exception(error: HTTPException) -> Response:
    """werkzeug's errors and webargs' parsing errors (which carry ``data``)."""
    status = error.code or 500
    if status >= 500:
        return _internal_error(getattr(error, "original_exception", None) or error)
    data = getattr(error, "data", None) or {}
    messages = data.get("messages")
    headers = dict(data.get("headers") or {})
    if status == 405:
        headers["Allow"] = ", ".join(sorted(getattr(error, "valid_methods", None) or []))
    if status == 400 and messages == {"json": ["Invalid JSON body."]}:
        return handle_domain_error(errors.MalformedJSONError(str(data.get("exc") or "syntax")))
    if status == 422 and messages:
        sent = getattr(data.get("exc"), "data", None)
        field_errors = list(_field_errors(messages, data.get("schema"), sent))
        count = len(field_errors)
        return problem_response(
            422,
            "validation-failed",
            "Validation failed",
            f"The request has {count} invalid field{'s' if count != 1 else ''}.",
            headers=headers,
            errors=field_errors,
        )
    code = HTTP_CODES.get(status) or _slug(error.name)
    extra = {}
    if status == 414:
        extra["instance"] = request.path[:INSTANCE_MAX]  # the path is what was too long
    return problem_response(status, code, error.name, _detail(error), headers=headers, **extra)


def _detail(error: HTTPException) -> str:
    """Say what went wrong with this request, rather than werkzeug's generic sentence."""
    if error.code == 404:
        return f"There is nothing at {request.path}; the API is described at /docs."
    if error.code == 405:
        allowed = ", ".join(sorted(getattr(error, "valid_methods", None) or []))
        return f"{request.method} is not allowed on {request.path}; allowed: {allowed}."
    if error.code == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        return f"The request body is larger than the limit of {limit} bytes."
    return error.description or error.name


def handle_integrity_error(error: IntegrityError) -> Response:
    name = constraint_name(error)
    if name in CONSTRAINT_CONFLICTS:
        code, title, detail = CONSTRAINT_CONFLICTS[name]
        return problem_response(409, code, title, detail)
    return _internal_error(error)


def handle_operational_error(error: OperationalError) -> Response:
    log.exception("database unavailable")
    return problem_response(
        503,
        "service-unavailable",
        "Service unavailable",
        "The database is unavailable or busy; retry the request.",
        headers={"Retry-After": "1"},
    )


def handle_unexpected(error: Exception) -> Response:
    return _internal_error(error)


def _internal_error(error: BaseException) -> Response:
    if _propagating() and error is not None and not isinstance(error, HTTPException):
        raise error
    log.error("unhandled error on %s %s\n%s", request.method, request.path, _describe(error))
    return problem_response(
        500,
        "internal-error",
        "Internal server error",
        "The server failed to handle the request; it has been logged.",
    )


def _describe(error: BaseException) -> str:
    """The error's traceback, its causes first, as Python prints it, except what the database
    said: its messages can quote the statement's values (``Key (email)=(...) already
    exists``), so a database error is told by its class, SQLSTATE and statement."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    withheld = [e.orig for e in chain if isinstance(e, StatementError) and e.orig is not None]
    text = ""
    for exc in reversed(chain):
        if text:
            text += (
                "\n\nThe above exception was the direct cause of the following exception:\n\n"
                if exc.__cause__ is not None
                else "\n\nDuring handling of the above exception, another exception occurred:\n\n"
            )
        frames = "".join(traceback.format_tb(exc.__traceback__))
        if isinstance(exc, StatementError):
            state = getattr(exc.orig, "sqlstate", None) or "unknown"
            origin = type(exc.orig).__name__ if exc.orig is not None else "no driver error"
            headline = f"{type(exc).__name__} ({origin}, SQLSTATE {state}) in: {exc.statement}"
        elif any(exc is orig for orig in withheld):
            headline = f"{type(exc).__module__}.{type(exc).__name__} (message withheld)"
        else:
            headline = "".join(traceback.format_exception_only(exc)).rstrip()
        text += f"Traceback (most recent call last):\n{frames}{headline}"
    return text


def _propagating() -> bool:
    """Flask's rule: re-raise unexpected errors in testing and debug unless told otherwise."""
    setting = current_app.config.get("PROPAGATE_EXCEPTIONS")
    return bool(current_app.testing or current_app.debug) if setting is None else bool(setting)


def _field_errors(
    messages: Mapping[str, Any], schema: Schema | None, sent: Any
) -> Iterator[dict[str, str]]:
    """Flatten webargs' ``{location: {field: [messages]}}`` into pointer/detail pairs.

    Pointers name only the schema's own fields (and list positions): what the client sent is
    never echoed. Unknown keys are counted at the object holding them, with the fields allowed
    there; a mapping's keys are left out of the pointer; a detail quoting a value sent is
    replaced (`_quotes`).
    """
    for location, tree in messages.items():
        for path, detail in _walk_schema(tree, (), schema, sent):
            pointer = "#/" + "/".join(_escape(part) for part in path)
            entry = {"pointer": pointer.rstrip("/") or "#", "detail": detail}
            if location not in ("json", "json_or_form", "form"):
                entry["parameter"] = str(path[0]) if path else ""
                entry["in"] = {"view_args": "path", "querystring": "query"}.get(location, location)
            yield entry


Errors = Iterator[tuple[tuple[str, ...], str]]


def _walk_schema(tree: Any, path: tuple[str, ...], schema: Schema | None, sent: Any) -> Errors:
    if not isinstance(tree, Mapping):
        yield from _leaves(tree, path, sent)
        return
    declared = {f.data_key or name: f for name, f in schema.load_fields.items()} if schema else {}
    unknown = 0
    for key, subtree in tree.items():
        if key == "_schema":
            yield from _leaves(subtree, path, sent)
        elif key in declared:
            yield from _walk_field(subtree, (*path, key), declared[key], _item(sent, key))
        else:
            unknown += 1
    if unknown:
        allowed = ", ".join(sorted(declared)) or "none"
        plural = "s" if unknown != 1 else ""
        yield path, f"{unknown} unknown field{plural}; the fields allowed here are: {allowed}."


def _walk_field(tree: Any, path: tuple[str, ...], field: fields.Field, sent: Any) -> Errors:
    if not isinstance(tree, Mapping):
        yield from _leaves(tree, path, sent)
    elif isinstance(field, fields.Nested) and not field.many:
        yield from _walk_schema(tree, path, field.schema, sent)
    elif isinstance(field, fields.Nested | fields.List | fields.Tuple):
        for index, subtree in tree.items():
            if not isinstance(index, int):
                yield from _leaves(subtree, path, sent)
            elif isinstance(field, fields.Nested):
                yield from _walk_schema(subtree, (*path, str(index)), field.schema, sent)
            else:
                inner = field.inner if isinstance(field, fields.List) else None
                if isinstance(field, fields.Tuple) and index < len(field.tuple_fields):
                    inner = field.tuple_fields[index]
                item = _item(sent, index)
                if inner is None:
                    yield from _leaves(subtree, (*path, str(index)), item)
                else:
                    yield from _walk_field(subtree, (*path, str(index)), inner, item)
    elif isinstance(field, fields.Mapping):
        # Keyed by the client's own keys: report at the mapping itself.
        for key, subtree in tree.items():
            value = _item(sent, key)
            parts = subtree if isinstance(subtree, Mapping) else {"value": subtree}
            for _, detail in _leaves(parts.get("key", []), (), key):
                yield path, f"A key: {detail}"
            value_field = field.value_field or fields.Raw()
            for subpath, detail in _walk_field(parts.get("value", []), (), value_field, value):
                where = f"A value's {'/'.join(subpath)}" if subpath else "A value"
                yield path, f"{where}: {detail}"
    else:
        for subtree in tree.values():
            yield from _leaves(subtree, path, sent)


def _leaves(tree: Any, path: tuple[str, ...], sent: Any) -> Errors:
    if isinstance(tree, Mapping):
        for subtree in tree.values():
            yield from _leaves(subtree, path, sent)
    elif isinstance(tree, list | tuple):
        for item in tree:
            yield from _leaves(item, path, sent)
    else:
        detail = str(tree)
        yield path, "Invalid value." if _quotes(detail, sent) else detail


def _item(sent: Any, key: Any) -> Any:
    try:
        return sent[key] if isinstance(sent, Mapping | list) else None
    except (KeyError, IndexError, TypeError):
        return None


# Values this long or longer are never repeated in a detail, whatever a validator says.
QUOTE_MIN_LENGTH = 6


def _quotes(detail: str, sent: Any, budget: int = 1000) -> bool:
    """Whether ``detail`` repeats a string (a value or a key) of ``sent``, the value at fault."""
    pending, seen = [sent], 0
    while pending and seen < budget:
        value = pending.pop()
        seen += 1
        if isinstance(value, str):
            if len(value) >= QUOTE_MIN_LENGTH and value in detail:
                return True
        elif isinstance(value, Mapping):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list | tuple):
            pending.extend(value)
    return False


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def init_app(app: Flask) -> None:
    """Register the handlers; werkzeug's HTTP errors are routed here by `loyalty.api`."""
    app.register_error_handler(errors.LoyaltyError, handle_domain_error)
    app.register_error_handler(IntegrityError, handle_integrity_error)
    app.register_error_handler(OperationalError, handle_operational_error)
    app.register_error_handler(Exception, handle_unexpected)
