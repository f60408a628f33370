"""The served contract as a validator: whether the spec's schema for an operation's body (or
query) accepts a value, so a test can check the spec and the server agree on it."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from flask import Flask
from jsonschema import Draft202012Validator, FormatChecker


@cache
def served_spec(app: Flask) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(
        json.dumps(app.extensions["flask-smorest"]["apis"][""]["ext_obj"].spec.to_dict())
    )
    return spec


def body_schema(app: Flask, method: str, path: str) -> dict[str, Any]:
    """The JSON Schema of the request body of ``METHOD path`` (path as in the spec)."""
    spec = served_spec(app)
    operation = spec["paths"][path][method.lower()]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    return {"components": spec["components"], **schema}


def query_schema(app: Flask, method: str, path: str, name: str) -> dict[str, Any]:
    """The JSON Schema of the query parameter ``name`` of ``METHOD path``."""
    spec = served_spec(app)
    [parameter] = [
        p
        for p in spec["paths"][path][method.lower()]["parameters"]
        if p["in"] == "query" and p["name"] == name
    ]
    return {"components": spec["components"], **parameter["schema"]}


def accepts(schema: dict[str, Any], value: Any) -> bool:
    """Whether ``value`` is valid against ``schema`` (formats checked)."""
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    return validator.is_valid(value)


def spec_accepts(app: Flask, method: str, path: str, body: Any) -> bool:
    return accepts(body_schema(app, method, path), body)


def assert_agree(
    app: Flask,
    client: Any,
    headers: dict[str, str],
    method: str,
    path: str,
    body: Any,
    *,
    valid: bool,
    url: str | None = None,
) -> Any:
    """The spec and the server agree on ``body``: both accept it (the server may still say
    404 or 409 for a business reason) or both refuse it (the server with 400 or 422)."""
    assert spec_accepts(app, method, path, body) is valid, f"the spec on {body!r}"
    response = client.open(url or path, method=method, json=body, headers=headers)
    assert response.status_code < 500, response.json
    refused = response.status_code in (400, 422)
    assert refused is not valid, (response.status_code, response.json)
    return response
