"""Review 9 probes: `jobs.run_due(workers=2)` runs the analytics' pass beside the rest
(cc972d5): the same results as workers=1, errors propagate, no thread left running."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from flask import Flask
from pytest_httpserver import HTTPServer
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty import jobs, wiring
from loyalty.analytics import service as analytics
from loyalty.analytics.models import MemberStage, RiskFlag
from loyalty.clock import FrozenClock
from loyalty.db import get_database
from loyalty.events.models import OutboxEvent, WebhookDelivery, WebhookEndpoint
from loyalty.members.models import Member
from tests.analytics.conftest import DAY, NOW, enrol, order
from tests.conftest import _truncate_all
from tests.events.conftest import make_endpoint, url

pytestmark = pytest.mark.concurrency


def _dataset(session: Session, server: HTTPServer) -> None:
    server.expect_request("/risk").respond_with_data("", status=204)
    server.expect_request("/all").respond_with_data("", status=204)
    make_endpoint(session, url(server, "/risk"), ["member.at_risk"])
    make_endpoint(session, url(server, "/all"), ["*"])
    for n in range(6):
        member = enrol(session, f"slipping-{n}", NOW - 300 * DAY)
        for index, days in enumerate((120, 100, 80, 60 - n)):
            order(session, member, f"S-{n}-{index}", 1000 + n, NOW - days * DAY)
    for n in range(4):
        member = enrol(session, f"fresh-{n}", NOW - 20 * DAY)
        order(session, member, f"F-{n}", 500, NOW - 2 * DAY)
    enrol(session, "new", NOW - DAY)


def _snapshot(session: Session) -> dict[str, Any]:
    external = dict(session.execute(select(Member.id, Member.external_id)).all())
    endpoints = dict(session.execute(select(WebhookEndpoint.id, WebhookEndpoint.url)).all())
    types = dict(session.execute(select(OutboxEvent.seq, OutboxEvent.type)).all())
    return {
        "stages": sorted(
            (external[m.member_id], m.stage, m.segment, m.orders, m.revenue)
            for m in session.scalars(select(MemberStage))
        ),
        "flags": sorted(
            (external[f.member_id], f.reason, f.outcome) for f in session.scalars(select(RiskFlag))
        ),
        "outbox": Counter(types.values()),
        "undispatched": sum(
            1 for e in session.scalars(select(OutboxEvent)) if e.dispatched_at is None
        ),
        "deliveries": Counter(
            (endpoints[d.endpoint_id].rsplit("/", 1)[1], types[d.event_seq], d.status)
            for d in session.scalars(select(WebhookDelivery))
        ),
    }


def test_r9_workers_2_gives_the_same_counts_and_rows_as_workers_1(
    app: Flask, now: FrozenClock, httpserver: HTTPServer
) -> None:
    """The same data run with one worker, then (every table emptied and the data made again)
    with two: the same report and rows."""
    results = {}
    for workers in (1, 2):
        with app.app_context():
            engine = get_database(app).engine
            _truncate_all(engine)
            session = get_database(app).sessionmaker()
            _dataset(session, httpserver)
            session.close()
            report = _run(app, workers)
            session = get_database(app).sessionmaker()
            snapshot = _snapshot(session)
            session.close()
        results[workers] = (report.wallets_settled, report.keys_purged, report.counts, snapshot)
        assert snapshot["undispatched"] == 0
        assert snapshot["outbox"]["member.at_risk"] >= 1
        # The at-risk endpoint got its deliveries in the same run, and they were attempted.
        assert (
            snapshot["deliveries"][("risk", "member.at_risk", "delivered")]
            == snapshot["outbox"]["member.at_risk"]
        )
    one, two = results[1], results[2]
    assert one[0] == two[0]
    assert {k: v for k, v in one[2].items() if v} == {k: v for k, v in two[2].items() if v}
    assert one[3] == two[3]


def _run(app: Flask, workers: int) -> jobs.Report:
    session = get_database(app).sessionmaker()
    try:
        return jobs.run_due(session, workers=workers)
    finally:
        session.close()


def _no_jobs_thread_left() -> bool:
    return not any(t.name.startswith("loyalty-jobs") for t in threading.enumerate())


def _with(monkeypatch: pytest.MonkeyPatch, replace: dict[Any, Any], beside: Any) -> None:
    monkeypatch.setattr(
        wiring, "DUE_WORK", tuple(replace.get(work, work) for work in wiring.DUE_WORK)
    )
    monkeypatch.setattr(wiring, "BESIDE", frozenset({beside}))


class BoomError(RuntimeError):
    pass


def test_r9_an_error_in_the_analytics_pass_propagates_after_the_rest_finished(
    app: Flask, now: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished: list[str] = []

    def failing(session: Session, **kwargs: Any) -> dict[str, int]:
        raise BoomError("analytics")

    def slow_rest(session: Session, **kwargs: Any) -> dict[str, int]:
        time.sleep(0.3)
        finished.append("rest")
        return {}

    from loyalty.tiers import service as tiers

    _with(monkeypatch, {analytics.run_due: failing, tiers.run_due: slow_rest}, failing)
    with app.app_context():
        with pytest.raises(BoomError):
            _run(app, workers=2)
    assert finished == ["rest"]
    assert _no_jobs_thread_left()


def test_r9_an_error_in_another_area_propagates_after_the_analytics_pass_finished(
    app: Flask, now: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished: list[str] = []

    def slow_pass(session: Session, **kwargs: Any) -> dict[str, int]:
        time.sleep(0.5)
        counts = analytics.run_due(session, **kwargs)
        finished.append("analytics")
        return counts

    def failing(session: Session, **kwargs: Any) -> dict[str, int]:
        raise BoomError("rest")

    from loyalty.rewards import service as rewards

    _with(monkeypatch, {analytics.run_due: slow_pass, rewards.run_due: failing}, slow_pass)
    with app.app_context():
        with pytest.raises(BoomError, match="rest"):
            _run(app, workers=2)
    assert finished == ["analytics"]
    assert _no_jobs_thread_left()


def test_r9_when_both_fail_neither_error_is_swallowed(
    app: Flask, now: FrozenClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Both threads fail: the rest's error propagates; the analytics' one should at least
    be chained or logged, not lost."""

    def failing_pass(session: Session, **kwargs: Any) -> dict[str, int]:
        raise BoomError("analytics-error")

    def failing_rest(session: Session, **kwargs: Any) -> dict[str, int]:
        time.sleep(0.3)
        raise BoomError("rest-error")

    from loyalty.rewards import service as rewards

    _with(
        monkeypatch, {analytics.run_due: failing_pass, rewards.run_due: failing_rest}, failing_pass
    )
    with app.app_context():
        with pytest.raises(BoomError) as raised:
            _run(app, workers=2)
    assert _no_jobs_thread_left()
    seen = [raised.value, raised.value.__context__, raised.value.__cause__]
    notes = " ".join(getattr(raised.value, "__notes__", []) or [])
    mentioned = (
        any(isinstance(e, BoomError) and "analytics-error" in str(e) for e in seen)
        or "analytics-error" in notes
        or "analytics-error" in caplog.text
    )
    assert mentioned, f"the analytics pass's error was lost (raised: {raised.value!r})"


def test_r9_sqlite_or_one_worker_stays_in_one_thread(
    app: Flask, now: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    names: set[str] = set()

    def noted(session: Session, **kwargs: Any) -> dict[str, int]:
        names.add(threading.current_thread().name)
        return analytics.run_due(session, **kwargs)

    _with(monkeypatch, {analytics.run_due: noted}, noted)
    with app.app_context():
        _run(app, workers=1)
    assert names == {threading.current_thread().name}
