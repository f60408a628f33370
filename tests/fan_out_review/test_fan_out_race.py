"""Review 9 probes: the one-statement fan-out (52912d0) on real concurrent connections."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import get_database, unit_of_work
from loyalty.events import delivery, outbox, rules, service
from loyalty.events.models import OutboxEvent, WebhookDelivery, WebhookEndpoint
from tests.events.conftest import ACTOR, make_endpoint, record
from tests.support import START, held_at_commit, in_thread

pytestmark = pytest.mark.concurrency


def _check_exactly_once(check: Session, ordered: bool = True) -> None:
    endpoints = check.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
            WebhookEndpoint.enabled.is_(True)
        )
    ).all()
    events = check.execute(
        select(OutboxEvent.seq, OutboxEvent.type, OutboxEvent.dispatched_at)
    ).all()
    assert all(e.dispatched_at is not None for e in events)
    expected = Counter(
        (e.seq, ep.id) for e in events for ep in endpoints if rules.matches(ep.event_types, e.type)
    )
    got = Counter(
        (r.event_seq, r.endpoint_id)
        for r in check.execute(select(WebhookDelivery.event_seq, WebhookDelivery.endpoint_id))
    )
    assert got == expected
    # Each endpoint's deliveries in event order.
    for ep in endpoints if ordered else []:
        seqs = list(
            check.scalars(
                select(WebhookDelivery.event_seq)
                .where(WebhookDelivery.endpoint_id == ep.id)
                .order_by(WebhookDelivery.id)
            )
        )
        assert seqs == sorted(seqs)


def test_r9_an_endpoint_created_before_an_event_gets_a_delivery_for_it(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """The endpoints are read before the batch now: an endpoint committed, then an event
    committed, both before the batch's events are read, gets no delivery for that event
    (the Python path read the events first, then the endpoints)."""
    session = new_session()
    make_endpoint(session, "https://first.example.com/hook", ["*"])
    record(session, member_id="early")
    engine = get_database(app).engine
    side = new_session()
    late: dict[str, Any] = {}

    def meanwhile(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if late or "dispatched_at IS NULL" not in statement or "LIMIT" not in statement.upper():
            return
        late["busy"] = True
        late["endpoint"] = make_endpoint(side, "https://late.example.com/hook", ["*"]).endpoint.id
        late["event"] = record(side, member_id="after-the-endpoint")

    event.listen(engine, "before_cursor_execute", meanwhile)
    try:
        while delivery.fan_out(session, batch_size=10):
            pass
    finally:
        event.remove(engine, "before_cursor_execute", meanwhile)

    check = new_session()
    seq = check.scalar(select(OutboxEvent.seq).where(OutboxEvent.id == late["event"]))
    queued_for = set(
        check.scalars(select(WebhookDelivery.endpoint_id).where(WebhookDelivery.event_seq == seq))
    )
    assert late["endpoint"] in queued_for, "endpoint created before the event missed it"


def test_r9_two_fan_outs_while_events_are_recorded(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    for index, filters in enumerate((["*"], ["points.*"], ["member.*"], ["tier.upgraded"])):
        make_endpoint(session, f"https://e{index}.example.com/hook", filters)
    make_endpoint(session, "https://off.example.com/hook", ["*"], enabled=False)
    stop = threading.Event()
    types = ["points.accrued", "member.enrolled", "tier.upgraded", "hold.created"]

    def writer() -> int:
        own = get_database(app).sessionmaker()
        count = 0
        try:
            while not stop.is_set() and count < 400:
                with unit_of_work(own):
                    for _ in range(3):
                        type_ = types[count % len(types)]
                        outbox.record(
                            own,
                            type=type_,
                            member_id=f"m{count}",
                            data={} if type_ != "points.accrued" else {"points": 1},
                            occurred_at=START,
                        )
                        count += 1
        finally:
            own.close()
        return count

    def fanner() -> int:
        own = get_database(app).sessionmaker()
        total = 0
        try:
            while not stop.is_set():
                total += delivery.fan_out(own, batch_size=7)
        finally:
            own.close()
        return total

    threads = [in_thread(app, writer)] + [in_thread(app, fanner) for _ in range(2)]
    threads[0][0].join(60)
    stop.set()
    for thread, _outcome in threads:
        thread.join(60)
        assert not thread.is_alive()
    outcomes = [outcome[0] for _thread, outcome in threads]
    assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
    drained = delivery.fan_out(new_session(), batch_size=10_000)
    assert outcomes[1] + outcomes[2] + drained == outcomes[0]
    _check_exactly_once(new_session())


def test_r9_an_event_committed_after_later_seqs_were_fanned_out_is_not_skipped(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    make_endpoint(session, "https://a.example.com/hook", ["*"])

    def slow(own: Session) -> str:
        return record(own, member_id="slow")

    thread, outcome, release = held_at_commit(app, new_session(), slow)
    try:
        fast = record(new_session(), member_id="fast")
        assert delivery.fan_out(new_session(), batch_size=10) == 1
    finally:
        release.set()
        thread.join(30)
    slow_id = outcome[0]
    check = new_session()
    seqs = dict(check.execute(select(OutboxEvent.id, OutboxEvent.seq)).all())
    assert seqs[slow_id] < seqs[fast]
    assert delivery.fan_out(new_session(), batch_size=10) == 1
    # (the late event is queued after the later seq: both paths do so)
    _check_exactly_once(new_session(), ordered=False)


def test_r9_purge_and_replay_beside_fan_out(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    endpoint = make_endpoint(session, "https://a.example.com/hook", ["points.*"]).endpoint.id
    make_endpoint(session, "https://b.example.com/hook", ["*"])
    old = [record(session, member_id=f"old{i}") for i in range(30)]
    while delivery.fan_out(session, batch_size=10):
        pass
    # The old deliveries are done: purgeable 31 days on.
    with unit_of_work(session):
        session.query(WebhookDelivery).update({"status": "delivered", "next_attempt_at": None})
    clock.advance(dt.timedelta(days=31))
    new = [record(session, member_id=f"new{i}") for i in range(60)]
    barrier = threading.Barrier(3)

    def purge() -> int:
        own = get_database(app).sessionmaker()
        barrier.wait()
        try:
            return delivery.purge_old_events(own, batch_size=3)
        finally:
            own.close()

    def fan() -> int:
        own = get_database(app).sessionmaker()
        barrier.wait()
        total = 0
        try:
            while fanned := delivery.fan_out(own, batch_size=4):
                total += fanned
        finally:
            own.close()
        return total

    def replay() -> int:
        own = get_database(app).sessionmaker()
        barrier.wait()
        try:
            return service.replay(
                own, endpoint_id=endpoint, actor=ACTOR, since=START + dt.timedelta(days=1)
            )
        finally:
            own.close()

    runs = [in_thread(app, work) for work in (purge, fan, replay)]
    for thread, _ in runs:
        thread.join(60)
    outcomes = [outcome[0] for _thread, outcome in runs]
    assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
    assert outcomes[0] == len(old) and outcomes[1] == len(new)
    check = new_session()
    assert check.scalar(select(func.count()).select_from(OutboxEvent)) == len(new)
    normal = Counter(
        check.scalars(select(WebhookDelivery.endpoint_id).where(WebhookDelivery.replay.is_(False)))
    )
    assert sorted(normal.values()) == [len(new), len(new)]


def test_r9_an_endpoint_disabled_before_an_event_gets_no_delivery_for_it(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """The mirror case: an endpoint disabled (committed), then an event committed, both
    before the batch's events are read: the event is queued for the disabled endpoint."""
    session = new_session()
    make_endpoint(session, "https://first.example.com/hook", ["*"])
    doomed = make_endpoint(session, "https://doomed.example.com/hook", ["*"]).endpoint.id
    record(session, member_id="early")
    engine = get_database(app).engine
    side = new_session()
    late: dict[str, Any] = {}

    def meanwhile(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if late or "dispatched_at IS NULL" not in statement or "LIMIT" not in statement.upper():
            return
        late["busy"] = True
        service.update_endpoint(side, endpoint_id=doomed, changes={"enabled": False}, actor=ACTOR)
        late["event"] = record(side, member_id="after-the-disable")

    event.listen(engine, "before_cursor_execute", meanwhile)
    try:
        while delivery.fan_out(session, batch_size=10):
            pass
    finally:
        event.remove(engine, "before_cursor_execute", meanwhile)

    check = new_session()
    seq = check.scalar(select(OutboxEvent.seq).where(OutboxEvent.id == late["event"]))
    queued_for = set(
        check.scalars(select(WebhookDelivery.endpoint_id).where(WebhookDelivery.event_seq == seq))
    )
    assert doomed not in queued_for, "an event recorded after the disable was queued for it"
