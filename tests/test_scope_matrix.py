"""Every operation in the spec demands its declared scope: 401 without a token, 403 with every
scope but that one, and neither with exactly that scope."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from loyalty.auth.rules import SCOPES
from tests.test_openapi import generated_spec, operations


def secured_operations(app: Flask) -> list[tuple[str, str, str]]:
    result = []
    for path, method, operation in operations(generated_spec(app)):
        if operation["security"]:
            [requirement] = operation["security"]
            [scope] = requirement["bearerAuth"]
            result.append((method, re.sub(r"\{[^}]+\}", "x", path), scope))
    return result


def call(client: FlaskClient, method: str, path: str, headers: dict[str, str]) -> int:
    kwargs = {"json": {}} if method in ("post", "put", "patch") else {}
    return getattr(client, method)(path, headers=headers, **kwargs).status_code


def test_every_scope_is_used_by_some_operation_or_reserved(base_app: Flask) -> None:
    used = {scope for _, _, scope in secured_operations(base_app)}
    assert used <= set(SCOPES)
    assert {"members:read", "members:write"} <= used


def test_scope_matrix(
    base_app: Flask, client: FlaskClient, make_headers: Callable[..., dict[str, str]]
) -> None:
    checked = 0
    for method, path, scope in secured_operations(base_app):
        where = f"{method.upper()} {path} ({scope})"
        assert call(client, method, path, {}) == 401, where
        others = [s for s in SCOPES if s != scope]
        assert call(client, method, path, make_headers(*others)) == 403, where
        assert call(client, method, path, make_headers(scope)) not in (401, 403), where
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("post", "/v1/auth/token", 422),
        ("get", "/v1/health", 200),
        ("get", "/v1/openapi.json", 200),
        ("get", "/docs", 200),
    ],
)
def test_public_endpoints_need_no_token(
    client: FlaskClient, method: str, path: str, status: int
) -> None:
    assert call(client, method, path, {}) == status
