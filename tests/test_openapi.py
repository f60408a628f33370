"""The committed contract matches the code, validates, and declares every error and scope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"
METHODS = ("get", "post", "put", "patch", "delete")


def generated_spec(app: Flask) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(
        json.dumps(app.extensions["flask-smorest"]["apis"][""]["ext_obj"].spec.to_dict())
    )
    return spec


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_committed_openapi_yaml_is_current(base_app: Flask) -> None:
    committed = yaml.safe_load(SPEC_PATH.read_text())
    assert committed == generated_spec(base_app), (
        "openapi.yaml is stale: run `loyalty openapi write --format yaml openapi.yaml`"
    )


def test_spec_is_valid_openapi_3_1(base_app: Flask) -> None:
    spec = generated_spec(base_app)
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_operation_declares_security_and_error_responses(base_app: Flask) -> None:
    spec = generated_spec(base_app)
    for path, method, operation in operations(spec):
        where = f"{method.upper()} {path}"
        assert operation.get("summary"), f"{where} has no summary (docstring)"
        assert "security" in operation, f"{where} declares no security"
        responses = operation["responses"]
        assert "default" in responses, where
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                ref = response["$ref"].rsplit("/", 1)[-1]
                content = spec["components"]["responses"][ref]["content"]
                assert list(content) == ["application/problem+json"], where
        if operation["security"]:
            [requirement] = operation["security"]
            assert list(requirement) == ["bearerAuth"], where
            assert {"401", "403"} <= set(responses), where
        if operation.get("requestBody") or any(
            p.get("in") == "query" for p in operation.get("parameters", [])
        ):
            assert "422" in responses, where


def test_spec_and_docs_are_served(client: FlaskClient) -> None:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.json is not None and response.json["info"]["title"] == "Loyalty API"
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.data
    with client.get("/docs/assets/swagger-ui-bundle.js") as asset:
        assert asset.status_code == 200 and len(asset.data) > 100_000
