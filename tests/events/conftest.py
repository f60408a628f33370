"""Events test helpers: the frozen clock, a real HTTP receiver on loopback (pytest-httpserver),
factories for endpoints and outbox events, and what a receiver got."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from pytest_httpserver import HTTPServer
from sqlalchemy.orm import Session

from loyalty.db import unit_of_work
from loyalty.events import outbox, service
from loyalty.events.service import EndpointWithSecret
from tests.support import START, _invariants_hold, clock, new_session

ACTOR = "cli_test"


@pytest.fixture(scope="session")
def httpserver_listen_address() -> tuple[str, int]:
    """The receivers listen on IPv4 loopback, on a free port."""
    return ("127.0.0.1", 0)


@dataclass(frozen=True)
class Received:
    """One webhook as the receiver got it."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


def received(server: HTTPServer, path: str = "/hook") -> list[Received]:
    """The requests the receiver got at ``path``, in order (the server is shared by the
    session's tests: a slow request of an earlier test may land in its log late)."""
    return [
        Received(request.path, {k.lower(): v for k, v in request.headers.items()}, request.data)
        for request, _response in server.log
        if request.path == path
    ]


def url(server: HTTPServer, path: str = "/hook") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


@pytest.fixture
def receiver(httpserver: HTTPServer) -> HTTPServer:
    """A receiver answering 204 at /hook."""
    httpserver.expect_request("/hook", method="POST").respond_with_data("", status=204)
    return httpserver


def make_endpoint(
    session: Session, endpoint_url: str, event_types: list[str] | None = None, **kwargs: Any
) -> EndpointWithSecret:
    return service.create_endpoint(
        session, actor=ACTOR, url=endpoint_url, event_types=event_types or ["*"], **kwargs
    )


def accrued_data(points: int = 10, order_id: str = "order-1") -> dict[str, Any]:
    return {
        "source": "order",
        "order_id": order_id,
        "channel_id": "chn_default",
        "reference": None,
        "points": points,
        "status": "pending",
        "activates_at": START + dt.timedelta(days=14),
        "balance": {"available": 0, "pending": points, "held": 0},
    }


def record(
    session: Session,
    type: str = "points.accrued",
    *,
    member_id: str | None = "mem_test",
    data: dict[str, Any] | None = None,
) -> str:
    """Record one event in a unit of work of its own (committed)."""
    with unit_of_work(session):
        return outbox.record(
            session,
            type=type,
            member_id=member_id,
            data=accrued_data() if data is None and type == "points.accrued" else data or {},
            occurred_at=START,
        )


@pytest.fixture
def private_refused(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The production rule: webhooks go to public addresses only."""
    monkeypatch.setitem(app.config, "WEBHOOKS_ALLOW_PRIVATE", False)
    yield


Factory = Callable[..., Any]
