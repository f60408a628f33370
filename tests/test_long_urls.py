"""Over-long URLs get a problem (414 uri-too-long), never an HTTP server's HTML page: in the
app, under Flask's development server, under gunicorn with the shipped gunicorn.conf.py and
under granian (`loyalty serve`), whose own refusals of what it cannot read carry no page."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from loyalty.api import MAX_URL_LENGTH
from tests.conftest import TEST_SECRET_KEY
from tests.e2e.test_readme import free_port

ROOT = Path(__file__).resolve().parent.parent
LONG_TARGETS = [
    "/v1/members?external_id=" + "a" * 4096,
    "/v1/members?" + "&".join(f"p{i}=v" for i in range(4000)),  # 4 KB and more of names
    "/v1/members?external_id=" + "a" * 16384,
    "/v1/members/" + "m" * 4096,
    "/v1/members/" + "m" * 16384,
]


def assert_uri_too_long(status: int, content_type: str, body: bytes) -> None:
    assert status == 414
    assert content_type == "application/problem+json"
    problem = json.loads(body)
    assert problem["code"] == "uri-too-long"
    assert problem["type"].endswith("/uri-too-long")
    assert str(MAX_URL_LENGTH) in problem["detail"]
    assert len(problem["instance"]) <= 256  # the over-long path is not echoed whole


@pytest.mark.parametrize("target", LONG_TARGETS, ids=lambda t: f"{len(t)}-bytes")
def test_the_app_refuses_long_urls_with_a_problem(
    client: FlaskClient, headers: dict[str, str], target: str
) -> None:
    response = client.get(target, headers=headers)
    assert_uri_too_long(response.status_code, response.mimetype, response.data)


def test_a_url_at_the_limit_is_read(client: FlaskClient, headers: dict[str, str]) -> None:
    prefix = "/v1/members?email="
    target = prefix + "a" * (MAX_URL_LENGTH - len(prefix))
    response = client.get(target, headers=headers)
    assert response.status_code == 422  # read: the email filter is too long
    assert response.json is not None and response.json["errors"][0]["pointer"] == "#/email"


def _serve(command: list[str], tmp_path: Path, port: int) -> Iterator[int]:
    env = {
        **os.environ,
        "LOYALTY_SECRET_KEY": TEST_SECRET_KEY,
        "LOYALTY_DATABASE_URL": f"sqlite:///{tmp_path / 'loyalty.db'}",
        "LOYALTY_INSTANCE_PATH": str(tmp_path),
    }
    log = (tmp_path / "server.log").open("w")  # a pipe nobody reads would fill and block it
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                connection.request("GET", "/v1/health")
                connection.getresponse().read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError((tmp_path / "server.log").read_text()) from None
                time.sleep(0.2)
            finally:
                connection.close()
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def development_server(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    command = ["loyalty", "run", "--port", str(port), "--no-reload"]
    yield from _serve(command, tmp_path, port)


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "wsgi:app"]
    yield from _serve(command, tmp_path, port)


@pytest.fixture
def granian(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    command = ["loyalty", "serve", "--port", str(port), "--workers", "1", "--threads", "2"]
    yield from _serve(command, tmp_path, port)


def _get(port: int, target: str) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("server", ["development_server", "gunicorn", "granian"])
def test_servers_answer_long_urls_with_the_apps_problem(
    request: pytest.FixtureRequest, server: str
) -> None:
    port = request.getfixturevalue(server)
    for target in LONG_TARGETS:
        assert_uri_too_long(*_get(port, target))
    status, content_type, _ = _get(port, "/v1/members?external_id=cust-1")
    assert (status, content_type) == (401, "application/problem+json")


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        return answer


def test_what_granian_refuses_itself_is_not_an_html_page(granian: int) -> None:
    """A request line or header too large to buffer, or bytes that are not HTTP, are refused
    by granian before the app sees them: a bare status with no body (no page to render)."""
    for request, status in (
        (b"GET /v1/members?q=" + b"a" * 600_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"431"),
        (b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 600_000 + b"\r\n\r\n", b"431"),
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
    ):
        head, _, body = _raw(granian, request).partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == status, head
        assert body == b""
        assert b"text/html" not in head.lower()
