"""Review 9 probes: the one-statement fan-out (52912d0) queues what the Python path queued:
one delivery per enabled matching endpoint per event, in event then endpoint order."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.events import delivery, rules, service
from loyalty.events.catalogue import CATALOGUE
from loyalty.events.models import OutboxEvent, WebhookDelivery, WebhookEndpoint
from tests.events.conftest import ACTOR, make_endpoint, record

FILTERS = [
    ["*"],
    ["points.*"],
    ["points.accrued"],
    ["member.*", "tier.upgraded"],
    ["analytics.alert"],  # nothing of it recorded in some runs
    ["hold.*", "reward.*", "*"],
    ["badge.awarded", "referral.*", "lifecycle.first_order"],
    ["member.at_risk"],
]


def _endpoints(session: Session) -> list[str]:
    made = []
    for index, filters in enumerate(FILTERS):
        made.append(
            make_endpoint(session, f"https://e{index}.example.com/hook", filters).endpoint.id
        )
    make_endpoint(session, "https://off.example.com/hook", ["*"], enabled=False)
    make_endpoint(session, "https://off2.example.com/hook", ["points.*"], enabled=False)
    return made


def _expected(session: Session, seqs: list[int]) -> list[tuple[int, str]]:
    """What the Python path queues: events in seq order, enabled endpoints in id order."""
    endpoints = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.event_types)
        .where(WebhookEndpoint.enabled.is_(True))
        .order_by(WebhookEndpoint.id)
    ).all()
    types = dict(session.execute(select(OutboxEvent.seq, OutboxEvent.type)).all())
    return [
        (seq, endpoint_id)
        for seq in sorted(seqs)
        for endpoint_id, filters in endpoints
        if rules.matches(filters, types[seq])
    ]


def _queued(session: Session) -> list[tuple[int, str]]:
    return [
        (row.event_seq, row.endpoint_id)
        for row in session.execute(
            select(WebhookDelivery.event_seq, WebhookDelivery.endpoint_id).order_by(
                WebhookDelivery.id
            )
        )
    ]


def _record_all(session: Session, rounds: int = 1) -> list[int]:
    for _ in range(rounds):
        for type_ in CATALOGUE:
            record(session, type_, data={} if type_ != "points.accrued" else None)
    return list(session.scalars(select(OutboxEvent.seq).order_by(OutboxEvent.seq)))


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 27, 28, 100])
def test_r9_every_catalogue_type_queued_as_the_python_path_would(
    session: Session, clock: FrozenClock, batch_size: int
) -> None:
    _endpoints(session)
    seqs = _record_all(session, rounds=2)
    total = 0
    calls = 0
    while fanned := delivery.fan_out(session, batch_size=batch_size):
        assert fanned <= batch_size
        total += fanned
        calls += 1
    assert total == len(seqs)
    assert calls == -(-len(seqs) // batch_size)
    assert _queued(session) == _expected(session, seqs)
    assert session.scalar(select(func.count()).where(OutboxEvent.dispatched_at.is_(None))) == 0


def test_r9_no_enabled_endpoint_dispatches_without_deliveries(
    session: Session, clock: FrozenClock
) -> None:
    make_endpoint(session, "https://off.example.com/hook", ["*"], enabled=False)
    seqs = _record_all(session)
    assert delivery.fan_out(session, batch_size=1000) == len(seqs)
    assert _queued(session) == []
    assert delivery.fan_out(session, batch_size=1000) == 0


def test_r9_no_endpoint_at_all(session: Session, clock: FrozenClock) -> None:
    seqs = _record_all(session)
    assert delivery.fan_out(session, batch_size=5) == 5
    assert delivery.fan_out(session, batch_size=1000) == len(seqs) - 5
    assert _queued(session) == []


def test_r9_endpoints_changed_between_batches(session: Session, clock: FrozenClock) -> None:
    made = _endpoints(session)
    seqs = _record_all(session, rounds=2)
    first, second, third = seqs[:10], seqs[10:30], seqs[30:]
    expected: list[tuple[int, str]] = []

    expected += _expected(session, first)
    assert delivery.fan_out(session, batch_size=10) == 10
    # Disable one, delete one, narrow one, re-enable a disabled one.
    service.update_endpoint(session, endpoint_id=made[0], changes={"enabled": False}, actor=ACTOR)
    service.delete_endpoint(session, endpoint_id=made[1], actor=ACTOR)
    expected = [pair for pair in expected if pair[1] != made[1]]  # cascaded
    service.update_endpoint(
        session, endpoint_id=made[5], changes={"event_types": ["hold.created"]}, actor=ACTOR
    )
    off = session.scalar(
        select(WebhookEndpoint.id)
        .where(WebhookEndpoint.enabled.is_(False), WebhookEndpoint.id != made[0])
        .order_by(WebhookEndpoint.id)
        .limit(1)
    )
    service.update_endpoint(session, endpoint_id=off, changes={"enabled": True}, actor=ACTOR)
    expected += _expected(session, second)
    assert delivery.fan_out(session, batch_size=20) == 20
    # A new endpoint, then the rest.
    make_endpoint(session, "https://late.example.com/hook", ["points.*", "member.at_risk"])
    expected += _expected(session, third)
    assert delivery.fan_out(session, batch_size=1000) == len(third)
    assert _queued(session) == expected


def test_r9_each_endpoints_first_attempts_follow_event_order(
    session: Session, clock: FrozenClock
) -> None:
    made = _endpoints(session)
    _record_all(session, rounds=3)
    while delivery.fan_out(session, batch_size=4):
        pass
    for endpoint_id in made:
        seqs = list(
            session.scalars(
                select(WebhookDelivery.event_seq)
                .where(WebhookDelivery.endpoint_id == endpoint_id)
                .order_by(WebhookDelivery.id)
            )
        )
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))


def test_r9_fan_out_skips_already_dispatched_and_dispatch_time_is_now(
    session: Session, clock: FrozenClock
) -> None:
    _endpoints(session)
    seqs = _record_all(session)
    # An event already dispatched (e.g. by an earlier run) is never queued again.
    session.execute(
        update(OutboxEvent).where(OutboxEvent.seq == seqs[3]).values(dispatched_at=clock.now())
    )
    session.commit()
    while delivery.fan_out(session, batch_size=3):
        pass
    rest = [seq for seq in seqs if seq != seqs[3]]
    assert _queued(session) == _expected(session, rest)
    times = set(session.scalars(select(WebhookDelivery.created_at)))
    assert times == {clock.now()}
    assert set(session.scalars(select(WebhookDelivery.next_attempt_at))) == {clock.now()}
    assert set(session.scalars(select(WebhookDelivery.status))) == {"pending"}
    assert set(session.scalars(select(WebhookDelivery.replay))) == {False}
    assert set(session.scalars(select(WebhookDelivery.attempts))) == {0}
