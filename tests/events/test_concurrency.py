"""Workers on real concurrent PostgreSQL connections: every event is sent once per endpoint
and attempt, first attempts in creation order, however the workers interleave."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from flask import Flask
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.events import delivery
from loyalty.events.models import WebhookAttempt, WebhookDelivery
from tests.events.conftest import make_endpoint, received, record, url
from tests.support import race

pytestmark = pytest.mark.concurrency
WORKERS = 3
EVENTS = 24


def drain(_index: int, session: Session) -> int:
    """One worker: passes until nothing is left to do; returns its attempts."""
    attempts = 0
    while True:
        report = delivery.deliver_due(session, batch_size=4)
        attempts += report.attempts
        if not (report.attempts or report.events_fanned_out):
            return attempts


def test_workers_deliver_each_event_once_per_endpoint_in_order(
    app: Flask,
    new_session: Callable[[], Session],
    httpserver: HTTPServer,
    clock: FrozenClock,
) -> None:
    paths = ("/a", "/b", "/c")
    for path in paths:
        httpserver.expect_request(path).respond_with_data("ok")
    session = new_session()
    for path in paths:
        make_endpoint(session, url(httpserver, path))
    ids = [record(session, member_id=f"m{i}") for i in range(EVENTS)]

    results = race(app, WORKERS, drain)

    assert all(isinstance(r, int) for r in results), results
    assert sum(results) == EVENTS * len(paths)  # type: ignore[arg-type]
    for path in paths:
        assert [r.headers["webhook-id"] for r in received(httpserver, path)] == ids, path
    check = new_session()
    assert check.scalar(select(func.count()).select_from(WebhookAttempt)) == EVENTS * len(paths)
    statuses = Counter(check.scalars(select(WebhookDelivery.status)))
    assert statuses == {"delivered": EVENTS * len(paths)}


def test_workers_retry_a_failing_endpoint_once_per_attempt(
    app: Flask,
    new_session: Callable[[], Session],
    httpserver: HTTPServer,
    clock: FrozenClock,
) -> None:
    httpserver.expect_request("/down").respond_with_data("no", status=500)
    session = new_session()
    make_endpoint(session, url(httpserver, "/down"))
    for i in range(6):
        record(session, member_id=f"m{i}")

    for _ in range(3):  # three rounds of attempts
        results = race(app, WORKERS, drain)
        assert sum(results) == 6, results  # type: ignore[arg-type]
        due = new_session().scalar(select(func.max(WebhookDelivery.next_attempt_at)))
        assert due is not None
        clock.set(due)

    attempts = Counter(new_session().scalars(select(WebhookAttempt.event_id)))
    assert sorted(attempts.values()) == [3] * 6
