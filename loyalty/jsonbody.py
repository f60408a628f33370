"""Strict parsing of request bodies: what Python's json module lets through but a database
or a JSON client would choke on is refused as malformed JSON."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import marshmallow as ma
from flask import Request
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from loyalty import errors

MAX_DEPTH = 32


class UnsafeJSONError(json.JSONDecodeError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "<request body>", 0)


def _reject_constant(name: str) -> Any:
    raise UnsafeJSONError(f"{name} is not a JSON number")


# Whole numbers written with a fraction or an exponent (70.0, 1e3) are read as integers, as
# JSON Schema counts them, up to this size.
MAX_WHOLE_FLOAT = 2**63


def _number(text: str) -> float | int:
    value = float(text)
    if math.isinf(value):
        raise UnsafeJSONError("number out of range")
    if value.is_integer() and abs(value) < MAX_WHOLE_FLOAT:
        return int(Decimal(text))
    return value


def _check_string(value: str) -> None:
    if "\x00" in value:
        raise UnsafeJSONError("strings must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeJSONError("strings must not contain unpaired surrogates") from None


def _check_tree(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise UnsafeJSONError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_string(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_string(key)
            _check_tree(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_tree(item, depth + 1)


def loads(data: bytes | str) -> Any:
    """Parse a request body; raise `json.JSONDecodeError` for anything unsafe to accept:
    NaN/Infinity, numbers out of range, deep nesting, NUL characters, unpaired surrogates.
    A whole number is an integer however it is written (``70.0`` is ``70``)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UnsafeJSONError(f"not UTF-8: {error.reason}") from None
    try:
        value = json.loads(data, parse_constant=_reject_constant, parse_float=_number)
    except RecursionError:
        raise UnsafeJSONError("nested too deeply") from None
    except ValueError as error:
        if isinstance(error, json.JSONDecodeError):
            raise
        raise UnsafeJSONError(str(error)) from None
    _check_tree(value)
    return value


class StrictParser(FlaskParser):
    """webargs' Flask parser with `loads` for JSON bodies, and one instance of each schema
    class for all requests (webargs would build one per request, copying every field: about
    a tenth of a small request's CPU). The project's schemas keep no state between loads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._schemas: dict[type[ma.Schema], ma.Schema] = {}

    def _get_schema(self, argmap: Any, req: Request) -> ma.Schema:
        if isinstance(argmap, type) and issubclass(argmap, ma.Schema):
            schema = self._schemas.get(argmap)
            if schema is None:
                schema = self._schemas.setdefault(argmap, argmap())
            return schema
        return super()._get_schema(argmap, req)

    def _raw_load_json(self, req: Request) -> Any:
        if not is_json_request(req):
            return core.missing
        return loads(req.get_data(cache=True))

    def _handle_invalid_json_error(
        self, error: Any, req: Request, *args: Any, **kwargs: Any
    ) -> Any:
        raise errors.MalformedJSONError(getattr(error, "msg", None) or str(error))
