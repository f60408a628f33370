"""No secret comes back: malformed bodies carrying a marker secret, sent to every operation of the
route table that takes a body, never see the marker again, neither in the answer (status line,
headers, body) nor in any log record written while the request was handled.

The requests go over a real loopback socket to werkzeug's server, so its request log is
captured too; the database engine logs its statements at DEBUG here, parameters included unless
the engine hides them."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask, request
from sqlalchemy import text
from werkzeug.serving import make_server

from loyalty import create_app
from loyalty.db import get_database, get_session
from tests.conftest import base_config
from tests.test_openapi import generated_spec

MARKER = "Zq7SecretMarker4411"
BODY_METHODS = ("POST", "PUT", "PATCH")
PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


@dataclass(frozen=True)
class Probe:
    """One hostile request: what it is, its headers (besides auth) and its raw body."""

    name: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    authorization: str | None = None  # None: the valid bearer token


@dataclass(frozen=True)
class Operation:
    method: str
    rule: str
    path: str
    schema: dict[str, Any] | None  # the JSON request body's schema in the spec, if any


@dataclass
class Answer:
    status_line: str
    headers: list[tuple[str, str]]
    body: bytes


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG, from before the test's database connection is opened (the engine
    decides whether to log statements when a connection opens). SQLAlchemy's engine logs its
    statements and their parameters at INFO (its DEBUG adds result rows: data, by request)."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="werkzeug")
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    return caplog


@pytest.fixture
def server(app: Flask) -> Iterator[tuple[str, int]]:
    """The app served on a free loopback port, one request at a time (they share the test's
    connection to the database)."""
    httpd = make_server("127.0.0.1", 0, app, threaded=False)
    thread = threading.Thread(target=httpd.serve_forever, name="marker-server", daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", httpd.server_port
    finally:
        httpd.shutdown()
        thread.join(timeout=30)
        httpd.server_close()


def send(
    address: tuple[str, int], method: str, path: str, headers: dict[str, str], body: bytes
) -> Answer:
    connection = http.client.HTTPConnection(*address, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        status_line = f"{response.status} {response.reason}"
        return Answer(status_line, response.getheaders(), response.read())
    finally:
        connection.close()


def body_operations(app: Flask) -> list[Operation]:
    """Every (rule, method) of the route table that takes a body, with its body schema."""
    spec = generated_spec(app)
    found = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) & set(BODY_METHODS)):
            spec_path = PARAMETER.sub(r"{\1}", rule.rule)
            operation = spec["paths"].get(spec_path, {}).get(method.lower())
            assert operation is not None, f"{method} {rule.rule} is not in the spec"
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema")
            path = PARAMETER.sub(lambda m: f"x-{m.group(1)}", rule.rule)
            found.append(Operation(method, rule.rule, path, resolve(spec, schema)))
    return found


def resolve(spec: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema itself, following $ref, allOf, anyOf and oneOf to the first real one."""
    while schema is not None:
        if "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        elif any(k in schema for k in ("allOf", "anyOf", "oneOf")) and "type" not in schema:
            options = schema.get("allOf") or schema.get("anyOf") or schema.get("oneOf")
            schema = next((o for o in options if o.get("type") != "null"), options[0])
        else:
            break
    if schema is not None:
        schema = {**schema, "_spec": spec}
    return schema


def types_of(schema: dict[str, Any]) -> set[str]:
    kind = schema.get("type", "string")
    return set(kind if isinstance(kind, list) else [kind])


def filled(schema: dict[str, Any] | None, leaf: Callable[[], Any], marker_keys: bool) -> Any:
    """A value shaped like ``schema`` whose every declared leaf is ``leaf()``; objects also get
    the marker as an undeclared key when ``marker_keys``."""
    if schema is None:
        return {MARKER: MARKER} if marker_keys else {}
    spec = schema["_spec"]
    kinds = types_of(schema)
    if "object" in kinds:
        value = {
            name: filled(resolve(spec, prop), leaf, marker_keys)
            for name, prop in schema.get("properties", {}).items()
        }
        if marker_keys or isinstance(schema.get("additionalProperties"), dict):
            value[MARKER] = MARKER
        return value
    if "array" in kinds:
        return [filled(resolve(spec, schema.get("items")), leaf, marker_keys)]
    return leaf()


def probes(operation: Operation) -> list[Probe]:
    schema = operation.schema
    properties = list((schema or {}).get("properties", {}))
    flat = {name: MARKER for name in properties} or {"client_secret": MARKER}
    nested = filled(schema, lambda: MARKER, marker_keys=False)
    keyed = filled(schema, lambda: MARKER, marker_keys=True)
    as_lists = {name: [MARKER] for name in properties}
    as_objects = {name: {MARKER: MARKER} for name in properties}
    too_long = {name: MARKER * 60 for name in properties}
    credentials = {"grant_type": "client_credentials", "client_id": MARKER, "client_secret": MARKER}
    secret_named = {
        name: MARKER for name in ("password", "api_secret", "access_token", "refresh_token")
    }
    json_type = {"Content-Type": "application/json"}
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    secret_form = {"client_id": MARKER, "client_secret": MARKER, MARKER: MARKER, **flat}
    encoded_form = "&".join(f"{k}={v}" for k, v in secret_form.items()).encode()
    boundary = "marker-boundary"
    multipart = (
        "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in secret_form.items()
        )
        + f"--{boundary}--\r\n"
    )
    found = [
        Probe("form type, JSON body", json.dumps(secret_form).encode(), form_type),
        Probe("form with the marker as keys and values", encoded_form, form_type),
        Probe(
            "multipart form with the marker",
            multipart.encode(),
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        ),
        Probe("JSON, every declared field the marker", json.dumps(flat).encode(), json_type),
        Probe("JSON, well-formed credentials", json.dumps(credentials).encode(), json_type),
        Probe("JSON, secret-named fields", json.dumps(secret_named).encode(), json_type),
        Probe("form, well-formed credentials", urlencode(credentials).encode(), form_type),
        Probe("JSON, nested fields the marker", json.dumps(nested).encode(), json_type),
        Probe("JSON, the marker as keys", json.dumps(keyed).encode(), json_type),
        Probe("JSON, fields as lists", json.dumps(as_lists).encode(), json_type),
        Probe("JSON, fields as objects", json.dumps(as_objects).encode(), json_type),
        Probe("JSON, fields too long", json.dumps(too_long).encode(), json_type),
        Probe("JSON, not an object", json.dumps([MARKER, {MARKER: MARKER}]).encode(), json_type),
        Probe("JSON, NUL in the marker", json.dumps({MARKER: MARKER + "\x00"}).encode(), json_type),
        Probe("text body", f"client_secret={MARKER}".encode(), {"Content-Type": "text/plain"}),
        Probe(
            "XML body",
            f"<client_secret>{MARKER}</client_secret>".encode(),
            {"Content-Type": "application/xml"},
        ),
        Probe("untyped body", MARKER.encode(), {}),
        Probe(
            "Basic auth with the marker as the secret",
            b"grant_type=client_credentials",
            form_type,
            "Basic " + base64.b64encode(f"cli_x:{MARKER}".encode()).decode(),
        ),
        Probe(
            "Basic auth, the marker as both",
            json.dumps(flat).encode(),
            json_type,
            "basic " + base64.b64encode(f"{MARKER}:{MARKER}".encode()).decode(),
        ),
        Probe(
            "Basic auth without a colon",
            b"",
            {},
            "Basic " + base64.b64encode(MARKER.encode()).decode(),
        ),
        Probe("Basic auth, not base64", b"", {}, f"Basic {MARKER}!"),
        Probe("Bearer, the marker as the token", b"{}", json_type, f"Bearer {MARKER}"),
    ]
    full = json.dumps(keyed)
    for cut in (len(full) // 2, len(full) - 1, full.find(MARKER) + 5):
        found.append(Probe(f"JSON truncated at {cut}", full[:cut].encode(), json_type))
    return found


def leaks(text: str) -> bool:
    return MARKER.lower() in text.lower()


def test_the_marker_never_comes_back(
    debug_logs: pytest.LogCaptureFixture,
    app: Flask,
    server: tuple[str, int],
    headers: dict[str, str],
) -> None:
    caplog = debug_logs
    operations = body_operations(app)
    assert len(operations) >= 30 and any(o.rule == "/v1/auth/token" for o in operations)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    failures = []
    sent = 0
    for operation in operations:
        for probe in probes(operation):
            caplog.clear()
            request_headers = dict(probe.headers)
            request_headers["Authorization"] = probe.authorization or headers["Authorization"]
            answer = send(server, operation.method, operation.path, request_headers, probe.body)
            sent += 1
            where = f"{operation.method} {operation.rule} ({probe.name}): {answer.status_line}"
            if int(answer.status_line.split()[0]) >= 500:
                failures.append(f"{where}: a server error")
            header_text = "\n".join(f"{k}: {v}" for k, v in answer.headers)
            if leaks(answer.status_line) or leaks(header_text):
                failures.append(f"{where}: the marker is in the status line or headers")
            if leaks(answer.body.decode("utf-8", "replace")):
                failures.append(f"{where}: the marker is in the body {answer.body[:300]!r}")
            logged = [formatter.format(record) for record in caplog.records]
            for line in logged:
                if leaks(line):
                    failures.append(f"{where}: the marker is in the log line {line[:300]!r}")
            assert logged, "no log record captured: werkzeug's request log should be there"
    assert sent > 500
    assert failures == [], f"{len(failures)} leaks:\n" + "\n".join(failures)


# --- database errors: the 500 handler's log ------------------------------------------------

FAILING_STATEMENTS = {
    # the value is only among the statement's parameters
    "parameters": "SELECT 1 / 0 WHERE CAST(:value AS text) IS NOT NULL",
    # PostgreSQL quotes the value in its own message too
    "message": "SELECT CAST(:value AS integer)",
}


@pytest.fixture
def fragile_app(database_url: str) -> Iterator[Flask]:
    """An app that does not propagate exceptions, as in production, with a route whose
    statement fails on the value posted."""
    app = create_app({**base_config(database_url), "PROPAGATE_EXCEPTIONS": False})

    @app.post("/v1/boom/<kind>")
    def boom(kind: str) -> str:
        value = (request.get_json() or {})["value"]
        get_session().execute(text(FAILING_STATEMENTS[kind]), {"value": value})
        return "unreachable"

    yield app
    get_database(app).engine.dispose()


@pytest.mark.parametrize("kind", sorted(FAILING_STATEMENTS))
def test_a_database_error_logs_no_value(
    fragile_app: Flask, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.DEBUG)
    response = fragile_app.test_client().post(f"/v1/boom/{kind}", json={"value": MARKER})
    assert response.status_code == 500
    assert not leaks(response.get_data(as_text=True))
    logged = "\n".join(logging.Formatter().format(record) for record in caplog.records)
    assert "unhandled error on POST /v1/boom/" in logged
    assert "Traceback (most recent call last)" in logged and "in boom" in logged
    assert "SQLSTATE 22" in logged  # division by zero, invalid text representation
    assert FAILING_STATEMENTS[kind].replace(":value", "%(value)s") in logged
    assert not leaks(logged), logged
