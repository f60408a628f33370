"""The outbox: one row in the caller's transaction, or none; unknown types refused; a NOTIFY
at commit on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import psycopg
import pytest
from flask import Flask
from sqlalchemy import func, make_url, select
from sqlalchemy.orm import Session

from loyalty.db import unit_of_work
from loyalty.events import outbox
from loyalty.events.catalogue import PAYLOAD_VERSION
from loyalty.events.models import OutboxEvent
from tests.events.conftest import START, accrued_data, record


def _count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(OutboxEvent)) or 0


def test_a_committed_unit_of_work_has_its_event(session: Session) -> None:
    event_id = record(session, member_id="mem_1")
    event = session.scalar(select(OutboxEvent).where(OutboxEvent.id == event_id))
    assert event is not None
    assert event_id.startswith("evt_")
    assert outbox.envelope(event) == {
        "id": event_id,
        "type": "points.accrued",
        "version": PAYLOAD_VERSION,
        "occurred_at": "2026-03-10T12:00:00Z",
        "member_id": "mem_1",
        "data": {
            "source": "order",
            "order_id": "order-1",
            "channel_id": "chn_default",
            "reference": None,
            "points": 10,
            "status": "pending",
            "activates_at": "2026-03-24T12:00:00Z",
            "balance": {"available": 0, "pending": 10, "held": 0},
        },
    }


def test_a_rolled_back_unit_of_work_leaves_no_event(session: Session) -> None:
    with pytest.raises(RuntimeError), unit_of_work(session):
        outbox.record(
            session, type="points.accrued", member_id=None, data=accrued_data(), occurred_at=START
        )
        assert _count(session) == 1  # written in the transaction...
        raise RuntimeError("the change failed")
    assert _count(session) == 0  # ...and gone with it


def test_record_never_commits(session: Session) -> None:
    with unit_of_work(session):
        pass
    outbox.record(
        session,
        type="member.birthday",
        member_id="m",
        data={"birthday": dt.date(1990, 3, 10)},
        occurred_at=START,
    )
    session.rollback()
    assert _count(session) == 0


def test_sequence_orders_events_as_written(session: Session) -> None:
    ids = [record(session, member_id=f"m{i}") for i in range(3)]
    assert list(session.scalars(select(OutboxEvent.id).order_by(OutboxEvent.seq))) == ids


def test_unknown_types_and_naive_times_are_programming_errors(session: Session) -> None:
    with pytest.raises(outbox.UnknownOutboundEventError, match="catalogue"):
        outbox.record(session, type="points.teleported", member_id=None, data={}, occurred_at=START)
    with pytest.raises(ValueError, match="timezone"):
        outbox.record(
            session,
            type="points.accrued",
            member_id=None,
            data=accrued_data(),
            occurred_at=START.replace(tzinfo=None),
        )
    assert _count(session) == 0


def test_data_is_written_as_the_catalogue_documents_it(session: Session) -> None:
    record(
        session,
        "member.birthday",
        data={"birthday": dt.date(1990, 3, 10), "internal_note": "not for receivers"},
    )
    assert session.scalar(select(OutboxEvent.data)) == {
        "birthday": "1990-03-10",
        "celebrated_on": None,
        "timezone": None,
    }


@pytest.mark.concurrency
def test_commit_notifies_listeners_once_and_rollback_not_at_all(
    app: Flask, new_session: Callable[[], Session]
) -> None:
    url = make_url(app.config["DATABASE_URL"]).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as listener:
        listener.execute(f"LISTEN {outbox.CHANNEL}")
        session = new_session()
        with pytest.raises(RuntimeError), unit_of_work(session):
            record_in_transaction(session)
            raise RuntimeError("rolled back")
        assert list(listener.notifies(timeout=0.2)) == []
        with unit_of_work(session):
            for _ in range(3):
                record_in_transaction(session)
        notes = list(listener.notifies(timeout=0.3, stop_after=2))
        assert [note.channel for note in notes] == [outbox.CHANNEL]


def record_in_transaction(session: Session) -> str:
    return outbox.record(
        session, type="points.accrued", member_id=None, data=accrued_data(), occurred_at=START
    )
