"""Delivery to a real HTTP receiver on loopback: fan-out by type, Standard Webhooks signatures
(checked by the README's verifier and by the standardwebhooks library), order, retries and
the disable rule on the frozen clock, redirects, timeouts, rotation, replays, the worker's
lease and the job's share."""

from __future__ import annotations

import datetime as dt
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from standardwebhooks import Webhook
from werkzeug import Request, Response

from loyalty import jobs
from loyalty.clock import FrozenClock
from loyalty.db import unit_of_work
from loyalty.events import delivery, rules, service, transport
from loyalty.events.errors import OutboxEventNotFoundError, WebhookEndpointDisabledError
from loyalty.events.models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tests.events.conftest import ACTOR, make_endpoint, received, record, url

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_verifier() -> Callable[[str, dict[str, str], bytes], bool]:
    """The verification snippet of the README's Webhooks section, run as a reader would."""
    text = README.read_text()
    section = text[text.index("## Webhooks") : text.index("## Running it")]
    [code] = [block for block in re.findall(r"```python\n(.*?)```", section, flags=re.S)]
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - the README's own snippet
    verify: Callable[[str, dict[str, str], bytes], bool] = namespace["verify"]
    return verify


def attempts(session: Session, endpoint_id: str) -> list[WebhookAttempt]:
    """The endpoint's delivery log, oldest first."""
    return list(reversed(service.list_attempts(session, endpoint_id, limit=200).items))


def fresh(session: Session, model: Any, key: Any) -> Any:
    session.expire_all()
    return session.get(model, key)


def test_an_event_is_delivered_once_with_a_verifiable_signature(
    session: Session, receiver: HTTPServer, clock: FrozenClock
) -> None:
    clock.set(dt.datetime.now(dt.UTC))  # the verifiers compare the timestamp with real time
    endpoint = make_endpoint(session, url(receiver))
    event_id = record(session, member_id="mem_1")

    report = delivery.deliver_due(session)

    assert (report.events_fanned_out, report.attempts, report.delivered) == (1, 1, 1)
    [got] = received(receiver)
    assert got.headers["webhook-id"] == event_id
    assert got.headers["webhook-timestamp"] == str(int(clock.now().timestamp()))
    assert got.headers["content-type"] == "application/json"
    assert got.event["id"] == event_id and got.event["type"] == "points.accrued"
    assert got.event["member_id"] == "mem_1" and got.event["data"]["points"] == 10
    assert set(got.event) == {"id", "type", "version", "occurred_at", "member_id", "data"}

    verify = readme_verifier()
    assert verify(endpoint.secret, got.headers, got.body)
    assert not verify(rules.new_secret(), got.headers, got.body)
    assert not verify(endpoint.secret, got.headers, got.body.replace(b"10", b"99"))
    assert Webhook(endpoint.secret).verify(got.body, got.headers) == got.event

    [attempt] = attempts(session, endpoint.id)
    assert (attempt.event_id, attempt.attempt, attempt.status_code) == (event_id, 1, 204)
    assert attempt.succeeded and attempt.next_attempt_at is None and attempt.error is None
    assert delivery.deliver_due(session).attempts == 0  # delivered: never sent again


def test_events_go_to_the_enabled_endpoints_whose_types_match(
    session: Session, httpserver: HTTPServer, clock: FrozenClock
) -> None:
    for path in ("/points", "/holds", "/off"):
        httpserver.expect_request(path).respond_with_data("ok")
    make_endpoint(session, url(httpserver, "/points"), ["points.*"])
    make_endpoint(session, url(httpserver, "/holds"), ["hold.created", "member.enrolled"])
    make_endpoint(session, url(httpserver, "/off"), ["*"], enabled=False)
    record(session, "points.accrued")
    record(
        session,
        "hold.created",
        data={
            "hold_id": "h",
            "points": 1,
            "status": "held",
            "balance": {"available": 0, "pending": 0, "held": 1},
        },
    )
    record(session, "tier.upgraded", data={"from_tier": None, "to_tier": "gold", "reason": "x"})

    delivery.deliver_due(session)

    assert [r.event["type"] for r in received(httpserver, "/points")] == ["points.accrued"]
    assert [r.event["type"] for r in received(httpserver, "/holds")] == ["hold.created"]
    assert received(httpserver, "/off") == []


def test_first_attempts_go_out_in_creation_order_across_batches(
    session: Session, receiver: HTTPServer, clock: FrozenClock
) -> None:
    make_endpoint(session, url(receiver))
    ids = [record(session, member_id=f"m{i}") for i in range(7)]

    report = delivery.deliver_due(session, batch_size=3)

    assert report.attempts == 7
    assert [r.headers["webhook-id"] for r in received(receiver)] == ids


def test_retries_back_off_then_the_endpoint_is_disabled_with_a_reason(
    session: Session, httpserver: HTTPServer, clock: FrozenClock
) -> None:
    httpserver.expect_request("/down").respond_with_data("maintenance", status=503)
    endpoint = make_endpoint(session, url(httpserver, "/down"))
    record(session)
    start = clock.now()

    moments = []
    while True:
        moments.append(clock.now())
        assert delivery.deliver_due(session).attempts == 1
        state = session.scalar(select(WebhookDelivery).execution_options(populate_existing=True))
        assert state is not None
        if state.status != "pending":
            break
        assert state.next_attempt_at is not None and state.next_attempt_at > clock.now()
        assert delivery.deliver_due(session).attempts == 0  # not due yet
        clock.set(state.next_attempt_at)

    assert state.status == "failed" and state.next_attempt_at is None
    gaps = [later - earlier for earlier, later in zip(moments, moments[1:], strict=False)]
    assert gaps[0] <= dt.timedelta(seconds=6) and gaps[1] > gaps[0]
    assert max(gaps) <= rules.RETRY_CAP * (1 + rules.RETRY_JITTER)
    assert dt.timedelta(days=2) < moments[-1] - start <= rules.RETRY_WINDOW
    log = attempts(session, endpoint.id)
    assert [a.attempt for a in log] == list(range(1, len(moments) + 1))
    assert all(a.status_code == 503 and a.error == "HTTP 503" for a in log)
    assert log[0].response_excerpt == "maintenance"
    assert [a.next_attempt_at is None for a in log] == [False] * (len(log) - 1) + [True]

    disabled = fresh(session, WebhookEndpoint, endpoint.id)
    assert not disabled.enabled
    assert disabled.disabled_reason.startswith("Disabled automatically")
    assert "HTTP 503" in disabled.disabled_reason
    record(session)  # a disabled endpoint gets no new events
    assert delivery.deliver_due(session).attempts == 0

    enabled = service.update_endpoint(
        session, endpoint_id=endpoint.id, changes={"enabled": True}, actor=ACTOR
    )
    assert enabled.disabled_reason is None and enabled.failing_since is None


def test_a_success_between_failures_keeps_the_endpoint_enabled(
    session: Session, httpserver: HTTPServer, clock: FrozenClock
) -> None:
    httpserver.expect_oneshot_request("/flaky").respond_with_data("no", status=500)
    httpserver.expect_request("/flaky").respond_with_data("ok")
    endpoint = make_endpoint(session, url(httpserver, "/flaky"))
    record(session)
    delivery.deliver_due(session)
    assert fresh(session, WebhookEndpoint, endpoint.id).failing_since == clock.now()
    clock.advance(dt.timedelta(seconds=10))
    delivery.deliver_due(session)
    assert [a.status_code for a in attempts(session, endpoint.id)] == [500, 200]
    assert fresh(session, WebhookEndpoint, endpoint.id).failing_since is None


def test_redirects_are_not_followed(
    session: Session, httpserver: HTTPServer, clock: FrozenClock
) -> None:
    httpserver.expect_request("/moved").respond_with_data(
        "", status=302, headers={"Location": url(httpserver, "/elsewhere")}
    )
    httpserver.expect_request("/elsewhere").respond_with_data("ok")
    endpoint = make_endpoint(session, url(httpserver, "/moved"))
    record(session)
    delivery.deliver_due(session)
    [attempt] = attempts(session, endpoint.id)
    assert attempt.status_code == 302 and "redirect" in (attempt.error or "")
    assert attempt.next_attempt_at is not None
    assert received(httpserver, "/elsewhere") == []


def test_slow_receivers_time_out(
    session: Session,
    httpserver: HTTPServer,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "READ_TIMEOUT", 0.2)

    released = threading.Event()

    def slow(_request: Request) -> Response:
        released.wait(5)
        return Response("late")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    endpoint = make_endpoint(session, url(httpserver, "/slow"))
    record(session)
    try:
        delivery.deliver_due(session)
    finally:
        released.set()
    [attempt] = attempts(session, endpoint.id)
    assert attempt.error == "timed out" and attempt.status_code is None
    assert attempt.duration_ms < 450


def test_a_closed_port_is_a_failed_attempt(session: Session, clock: FrozenClock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = make_endpoint(session, f"http://127.0.0.1:{port}/hook")
    record(session)
    delivery.deliver_due(session)
    [attempt] = attempts(session, endpoint.id)
    assert attempt.error == "connection refused" and attempt.next_attempt_at is not None


def _signatures(got: Any) -> list[str]:
    return str(got.headers["webhook-signature"]).split(" ")


def test_a_rotated_secret_signs_beside_the_old_one_until_the_overlap_ends(
    session: Session, receiver: HTTPServer, clock: FrozenClock
) -> None:
    endpoint = make_endpoint(session, url(receiver))
    rotated = service.rotate_secret(session, endpoint_id=endpoint.id, actor=ACTOR)
    assert rotated.secret != endpoint.secret
    assert rotated.previous_secret_expires_at == clock.now() + dt.timedelta(hours=24)

    record(session)
    delivery.deliver_due(session)
    [got] = received(receiver)
    timestamp = int(got.headers["webhook-timestamp"])
    sign = {"event_id": got.headers["webhook-id"], "timestamp": timestamp, "body": got.body}
    assert _signatures(got) == [
        rules.sign(rotated.secret, **sign),
        rules.sign(endpoint.secret, **sign),
    ]

    clock.advance(dt.timedelta(hours=24))
    record(session)
    delivery.deliver_due(session)
    last = received(receiver)[-1]
    sign = {
        "event_id": last.headers["webhook-id"],
        "timestamp": int(last.headers["webhook-timestamp"]),
        "body": last.body,
    }
    assert _signatures(last) == [rules.sign(rotated.secret, **sign)]

    again = service.rotate_secret(session, endpoint_id=endpoint.id, actor=ACTOR, overlap_seconds=0)
    assert again.previous_secret_expires_at is None
    record(session)
    delivery.deliver_due(session)
    assert len(_signatures(received(receiver)[-1])) == 1


def test_replay_one_event_or_a_range(
    session: Session, receiver: HTTPServer, clock: FrozenClock
) -> None:
    endpoint = make_endpoint(session, url(receiver), ["points.*"])
    first = record(session)
    clock.advance(dt.timedelta(hours=1))
    middle = clock.now()
    second = record(session)
    other = record(session, "member.birthday", data={"birthday": dt.date(1990, 1, 2)})
    clock.advance(dt.timedelta(hours=1))
    third = record(session)
    delivery.deliver_due(session)
    assert [r.headers["webhook-id"] for r in received(receiver)] == [first, second, third]

    queued = service.replay(session, endpoint_id=endpoint.id, actor=ACTOR, event_id=first)
    assert queued == 1
    # Any type by id; by range, only what the endpoint subscribes to.
    assert service.replay(session, endpoint_id=endpoint.id, actor=ACTOR, event_id=other) == 1
    queued = service.replay(
        session, endpoint_id=endpoint.id, actor=ACTOR, since=middle, until=clock.now()
    )
    assert queued == 1  # the second; the third was recorded at `until`
    assert delivery.deliver_due(session).attempts == 3
    assert [r.headers["webhook-id"] for r in received(receiver)][3:] == [first, other, second]
    log = attempts(session, endpoint.id)
    assert [a.replay for a in log] == [False] * 3 + [True] * 3

    with pytest.raises(OutboxEventNotFoundError):
        service.replay(session, endpoint_id=endpoint.id, actor=ACTOR, event_id="evt_nope")
    service.update_endpoint(
        session, endpoint_id=endpoint.id, changes={"enabled": False}, actor=ACTOR
    )
    with pytest.raises(WebhookEndpointDisabledError):
        service.replay(session, endpoint_id=endpoint.id, actor=ACTOR, event_id=first)


def test_an_endpoint_held_by_another_worker_is_skipped(
    session: Session, receiver: HTTPServer, clock: FrozenClock
) -> None:
    endpoint = make_endpoint(session, url(receiver))
    record(session)
    with unit_of_work(session):
        session.execute(
            update(WebhookEndpoint).values(
                lease_token="other-worker", lease_until=clock.now() + dt.timedelta(minutes=1)
            )
        )
    assert delivery.deliver_due(session).attempts == 0
    clock.advance(dt.timedelta(minutes=2))  # the other worker's lease ran out
    assert delivery.deliver_due(session).attempts == 1
    lease = fresh(session, WebhookEndpoint, endpoint.id)
    assert (lease.lease_token, lease.lease_until) == (None, None)


def test_an_unreadable_secret_fails_the_attempt_without_sending(
    app: Flask,
    session: Session,
    receiver: HTTPServer,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = make_endpoint(session, url(receiver))
    record(session)
    monkeypatch.setitem(app.config, "SECRET_KEY", "another-secret-key-" + "x" * 40)
    delivery.deliver_due(session)
    [attempt] = attempts(session, endpoint.id)
    assert "rotate the endpoint's secret" in (attempt.error or "")
    assert received(receiver) == []


def test_the_job_delivers_and_purges_events_after_30_days(
    session: Session, receiver: HTTPServer, clock: FrozenClock
) -> None:
    make_endpoint(session, url(receiver))
    record(session)
    report = jobs.run_due(session)
    assert report.counts["webhook attempts"] == 1
    assert "webhook attempts: 1" in report.summary()
    clock.advance(dt.timedelta(days=31))
    assert jobs.run_due(session).counts["outbox events purged"] == 1
    assert session.scalar(select(OutboxEvent)) is None
    assert session.scalar(select(WebhookAttempt)) is None


def test_each_event_is_queued_for_each_endpoint_it_matches_in_event_then_endpoint_order(
    session: Session, clock: FrozenClock
) -> None:
    points = make_endpoint(session, "https://a.example.com/hook", ["points.*"]).endpoint.id
    everything = make_endpoint(session, "https://b.example.com/hook", ["*"]).endpoint.id
    tiers = make_endpoint(session, "https://c.example.com/hook", ["tier.upgraded"]).endpoint.id
    make_endpoint(session, "https://d.example.com/hook", ["*"], enabled=False)
    tier_data = {"from_tier": None, "to_tier": "gold", "reason": "x"}
    recorded = [
        record(session, "points.accrued"),
        record(session, "tier.upgraded", data=tier_data),
        record(session, "member.enrolled", data={}),
        record(session, "points.accrued"),
    ]
    assert delivery.fan_out(session, batch_size=3) == 3
    assert delivery.fan_out(session, batch_size=3) == 1
    assert delivery.fan_out(session, batch_size=3) == 0

    seqs = {
        event_id: seq
        for event_id, seq in session.execute(select(OutboxEvent.id, OutboxEvent.seq)).all()
    }
    queued = session.execute(
        select(WebhookDelivery.event_seq, WebhookDelivery.endpoint_id).order_by(WebhookDelivery.id)
    ).all()
    first, tier, enrolled, last = (seqs[event_id] for event_id in recorded)
    expected = [
        (first, points),
        (first, everything),
        (tier, everything),
        (tier, tiers),
        (enrolled, everything),
        (last, points),
        (last, everything),
    ]
    within = sorted(expected, key=lambda pair: (pair[0], pair[1]))
    assert [tuple(row) for row in queued] == within
    assert session.scalar(select(func.count()).where(OutboxEvent.dispatched_at.is_(None))) == 0
