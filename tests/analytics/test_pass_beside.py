"""`loyalty jobs run --workers 2` runs the analytics' daily pass beside the other areas' due
work, in a thread with a connection of its own (`wiring.BESIDE`), then fans out once more: the
events the pass published are fanned out in the same run, however long the pass takes."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from loyalty import jobs, wiring
from loyalty.analytics import service
from loyalty.clock import FrozenClock
from loyalty.db import get_database
from loyalty.events.models import OutboxEvent
from tests.analytics.conftest import DAY, NOW, enrol, order

pytestmark = pytest.mark.concurrency


def test_the_analytics_pass_runs_beside_the_rest_and_its_events_are_fanned_out(
    app: Flask, now: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with app.app_context():
        session = get_database(app).sessionmaker()
        slipping = enrol(session, "slipping", NOW - 200 * DAY)
        for index, days in enumerate((100, 80, 50)):
            order(session, slipping, f"S-{index}", 1000, NOW - days * DAY)
        session.close()

    threads: dict[str, str] = {}

    def slow_pass(session: Any, **kwargs: Any) -> dict[str, int]:
        # Longer than everything else: its event is written after the rest's fan-out.
        threads["analytics"] = threading.current_thread().name
        time.sleep(0.5)
        return service.run_due(session, **kwargs)

    def noted(work: Any) -> Any:
        def run(session: Any, **kwargs: Any) -> dict[str, int]:
            threads.setdefault("rest", threading.current_thread().name)
            return work(session, **kwargs)

        return run

    due_work = tuple(
        slow_pass if work is service.run_due else noted(work) for work in wiring.DUE_WORK
    )
    monkeypatch.setattr(wiring, "DUE_WORK", due_work)
    monkeypatch.setattr(wiring, "BESIDE", frozenset({slow_pass}))

    with app.app_context():
        report = jobs.run_due(get_database(app).sessionmaker(), workers=2)
        session = get_database(app).sessionmaker()
        undispatched = session.scalar(
            select(func.count()).where(OutboxEvent.dispatched_at.is_(None))
        )
        at_risk = session.scalar(select(func.count()).where(OutboxEvent.type == "member.at_risk"))
        session.close()
    assert report.counts["members flagged at risk"] == 1
    assert at_risk == 1 and undispatched == 0
    assert threads["analytics"] != threads["rest"]
    assert report.counts["webhook events fanned out"] >= 1


def test_with_one_worker_the_pass_runs_in_order(app: Flask, now: FrozenClock) -> None:
    with app.app_context():
        session = get_database(app).sessionmaker()
        enrol(session, "one", NOW - 10 * DAY)
        report = jobs.run_due(session, workers=1)
        session.close()
    assert report.counts["stages computed"] == 1
