"""The SSRF guard: webhook URLs must reach public addresses only, checked when an endpoint is
saved and again at connect time, connecting to the address checked."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.events import delivery, service
from tests.events.conftest import make_endpoint, received, record

ENDPOINTS = "/v1/webhooks/endpoints"
PUBLIC = "93.184.216.34"


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """Names this test resolves itself (None: no such host); others as usual."""
    answers: dict[str, str | None] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            address = answers[host]
            if address is None:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://127.0.0.1/hook", "is 127.0.0.1, a loopback address"),
        ("http://10.0.0.7:8080/hook", "is 10.0.0.7, a private address"),
        ("http://192.168.1.20/hook", "is 192.168.1.20, a private address"),
        ("http://169.254.169.254/latest/meta-data", "is 169.254.169.254, a link-local address"),
        ("http://[::1]/hook", "is ::1, a loopback address"),
        ("http://[::ffff:127.0.0.1]/hook", "a loopback address"),
        ("http://0.0.0.0/hook", "is 0.0.0.0, an unspecified address"),
        ("https://localhost/hook", "localhost resolves to"),
        ("http://2130706433/hook", "resolves to 127.0.0.1, a loopback address"),
    ],
)
def test_private_targets_are_refused(
    client: FlaskClient,
    headers: dict[str, str],
    private_refused: None,
    target: str,
    reason: str,
) -> None:
    response = client.post(ENDPOINTS, json={"url": target, "event_types": ["*"]}, headers=headers)
    assert response.status_code == 422, response.json
    problem = response.json
    assert problem is not None
    assert problem["code"] == "webhook-url-not-allowed"
    assert problem["errors"] == [{"pointer": "#/url", "detail": problem["detail"]}]
    assert reason in problem["detail"]
    assert "LOYALTY_WEBHOOKS_ALLOW_PRIVATE" in problem["detail"]


def test_a_host_that_does_not_resolve_is_refused(
    client: FlaskClient, headers: dict[str, str], private_refused: None, dns: dict[str, Any]
) -> None:
    dns["nowhere.example"] = None
    body = {"url": "https://nowhere.example/hook", "event_types": ["*"]}
    response = client.post(ENDPOINTS, json=body, headers=headers)
    assert response.status_code == 422
    assert response.json is not None and "does not resolve" in response.json["detail"]


def test_public_targets_are_accepted_and_updates_are_checked_too(
    client: FlaskClient, headers: dict[str, str], private_refused: None, dns: dict[str, Any]
) -> None:
    dns["hooks.example.com"] = PUBLIC
    body = {"url": "https://hooks.example.com/loyalty", "event_types": ["*"]}
    created = client.post(ENDPOINTS, json=body, headers=headers)
    assert created.status_code == 201, created.json
    path = f"{ENDPOINTS}/{created.json['id']}"  # type: ignore[index]
    moved = client.patch(path, json={"url": "http://10.1.2.3/x"}, headers=headers)
    assert moved.status_code == 422
    assert moved.json is not None and moved.json["code"] == "webhook-url-not-allowed"


def test_dns_rebinding_is_caught_at_connect_time(
    session: Session,
    receiver: HTTPServer,
    clock: FrozenClock,
    private_refused: None,
    dns: dict[str, Any],
) -> None:
    dns["hooks.example.com"] = PUBLIC
    endpoint = make_endpoint(session, f"http://hooks.example.com:{receiver.port}/hook")
    dns["hooks.example.com"] = "127.0.0.1"  # the name now points inside
    record(session)
    delivery.deliver_due(session)
    [attempt] = service.list_attempts(session, endpoint.id).items
    assert attempt.error == (
        "not sent: the URL's host hooks.example.com resolves to 127.0.0.1, a loopback address"
    )
    assert attempt.status_code is None and attempt.next_attempt_at is not None
    assert received(receiver) == []


def test_the_connection_goes_to_the_address_checked(
    session: Session, receiver: HTTPServer, clock: FrozenClock, dns: dict[str, Any]
) -> None:
    """(Private addresses allowed here.) The name is resolved once, the socket connects to
    that address, and the request still names the host."""
    dns["hooks.example.com"] = "127.0.0.1"
    make_endpoint(session, f"http://hooks.example.com:{receiver.port}/hook")
    record(session)
    assert delivery.deliver_due(session).delivered == 1
    [got] = received(receiver)
    assert got.headers["host"] == f"hooks.example.com:{receiver.port}"


def test_allowing_private_addresses_skips_the_lookup(
    session: Session, dns: dict[str, Any], clock: FrozenClock
) -> None:
    dns["not-yet-registered.example"] = None
    created = make_endpoint(session, "https://not-yet-registered.example/hook")
    assert created.url == "https://not-yet-registered.example/hook"
