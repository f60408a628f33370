"""Workers on real concurrent PostgreSQL connections: every event is sent once per endpoint
and attempt, first attempts in creation order, however the workers interleave; lifecycle
triggers send each occurrence once, however many passes run at once."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable

import pytest
from flask import Flask
from pytest_httpserver import HTTPServer
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import unit_of_work
from loyalty.events import delivery, lifecycle
from loyalty.events import service as events_service
from loyalty.events.models import (
    LifecycleMark,
    LifecycleSent,
    OutboxEvent,
    WebhookAttempt,
    WebhookDelivery,
)
from loyalty.ledger import service as ledger
from loyalty.members import service as members
from tests.events.conftest import make_endpoint, received, record, url
from tests.support import START, race

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


def test_concurrent_lifecycle_passes_send_each_occurrence_once(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    # Points active at once that expire at the end of 10 April, within 60 days' notice.
    ledger.update_settings(session, changes={"pending_days": 0, "expiry_months": 1}, actor="t")
    events_service.update_lifecycle_settings(session, changes={"expiring_soon_days": 60}, actor="t")
    people = 6
    for i in range(people):
        # 11 March began an hour before START in Auckland: a birthday today.
        member, _ = members.enroll_member(
            session,
            external_id=f"kiri-{i}",
            birthday=dt.date(1990 + i, 3, 11),
            timezone="Pacific/Auckland",
        )
        ledger.accrue_order(
            session, member_id=member.id, order_id=f"o-{i}", total=1000, currency="USD"
        )
        members.enroll_member(
            session, external_id=f"old-{i}", enrolled_at=START - dt.timedelta(days=100)
        )

    def pass_(_index: int, session: Session) -> dict[str, int]:
        return lifecycle.run_due(session, batch_size=2)

    def sent_by(results: list[dict[str, int] | Exception]) -> int:
        assert all(isinstance(r, dict) for r in results), results
        return sum(r[t.label] for r in results if isinstance(r, dict) for t in triggers)

    triggers = lifecycle.TRIGGERS.values()
    assert sent_by(race(app, WORKERS, pass_)) == 4 * people
    # Every mark lost (as after a restore), then more passes at once: nothing goes twice.
    with unit_of_work(session):
        session.execute(delete(LifecycleMark))
    assert sent_by(race(app, WORKERS, pass_)) == 0

    check = new_session()
    told = Counter((event.type, event.member_id) for event in check.scalars(select(OutboxEvent)))
    by_type = Counter(event_type for event_type, _member in told)
    assert {pair: n for pair, n in told.items() if n > 1} == {}
    assert {t: by_type[t] for t in lifecycle.TRIGGERS} == {
        "lifecycle.first_order": people,
        "points.expiring_soon": people,
        "member.birthday": people,
        "member.inactive": people,
    }
    sent = check.scalar(select(func.count()).select_from(LifecycleSent))
    assert sent == 4 * people
