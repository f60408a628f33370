"""`before_commit` bookkeeping, savepoints, retries and the other accrual paths (a review of
8f0a875)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from loyalty import db as loyalty_db
from loyalty import imports
from loyalty.clock import FrozenClock
from loyalty.db import RunAgainError, before_commit, request_transaction, unit_of_work
from loyalty.earning import service
from loyalty.earning.models import Campaign
from tests.campaign_charge.helpers import campaign, given_by_orders
from tests.ledger.conftest import order


def _spent(session: Session, campaign_id: str) -> int:
    session.expire_all()
    row = session.get(Campaign, campaign_id)
    assert row is not None
    return row.spent


def _exact(session: Session, campaign_id: str) -> None:
    session.expire_all()
    row = session.get(Campaign, campaign_id)
    assert row is not None
    assert row.budget is None or row.spent <= row.budget
    assert row.spent == given_by_orders(session).get(campaign_id, 0), (
        row.spent,
        given_by_orders(session),
    )


def test_work_queued_in_the_root_runs_once_through_savepoints(session: Session) -> None:
    ran: list[str] = []
    session.execute(text("SELECT 1"))
    before_commit(session, lambda s: ran.append("root"))
    with session.begin_nested():
        before_commit(session, lambda s: ran.append("released"))
    savepoint = session.begin_nested()
    before_commit(session, lambda s: ran.append("rolled back"))
    savepoint.rollback()
    inner = session.begin_nested()
    before_commit(session, lambda s: ran.append("committed with root"))
    assert ran == []
    session.commit()  # commits `inner` and the root
    assert not inner.is_active
    assert ran == ["root", "released", "committed with root"], ran
    session.execute(text("SELECT 1"))
    session.commit()
    assert ran == ["root", "released", "committed with root"], ran


def test_work_of_a_rolled_back_or_closed_transaction_never_runs(session: Session) -> None:
    ran: list[str] = []
    session.execute(text("SELECT 1"))
    before_commit(session, lambda s: ran.append("rolled back"))
    session.rollback()
    session.execute(text("SELECT 1"))
    session.commit()
    session.execute(text("SELECT 1"))
    before_commit(session, lambda s: ran.append("closed"))
    session.close()
    session.execute(text("SELECT 1"))
    session.commit()
    assert ran == []


def test_work_queued_with_no_transaction_open_is_refused(session: Session) -> None:
    """Queued while no transaction is open it would run at the commit of a transaction it
    was never part of: refused."""
    ran: list[str] = []
    session.commit()
    assert not session.in_transaction()
    with pytest.raises(RuntimeError, match="outside a transaction"):
        before_commit(session, lambda s: ran.append("stray"))
    session.execute(text("SELECT 1"))
    session.commit()
    assert ran == []


def test_run_again_leaves_nothing_for_the_next_commit(session: Session) -> None:
    ran: list[str] = []

    def refuse(s: Session) -> None:
        ran.append("refuse")
        raise RunAgainError()

    with pytest.raises(RunAgainError), unit_of_work(session):
        session.execute(text("SELECT 1"))
        before_commit(session, refuse)
        before_commit(session, lambda s: ran.append("second"))
    assert loyalty_db._BEFORE_COMMIT not in session.info
    with unit_of_work(session):
        session.execute(text("SELECT 1"))
    assert ran == ["refuse"], ran


def test_retried_accrual_leaves_no_state_behind(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    """The budget lacks the room at the commit: run again. After it, the session holds no
    queued work and the next orders are exact."""
    cid = campaign(session, clock, "Retry", budget=150)
    mid = member()
    commits: list[int] = []
    event.listen(session, "before_commit", lambda s: commits.append(1))
    assert order(session, mid, 10000)["points"] == 200
    assert order(session, mid, 10000)["points"] == 150  # at the commit: no room, run again
    for key in (loyalty_db._BEFORE_COMMIT, loyalty_db._AFTER_COMMIT):
        assert not session.info.get(key), (key, session.info.get(key))
    assert order(session, mid, 10000)["points"] == 100
    assert _spent(session, cid) == 150
    _exact(session, cid)


def test_an_error_after_the_accrual_inside_a_request_charges_nothing(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    cid = campaign(session, clock, "ReqErr", budget=1000)
    mid = member()
    with pytest.raises(LookupError), request_transaction(session):
        assert order(session, mid, 10000, order_id="req-1")["points"] == 200
        raise LookupError("after the accrual")
    assert _spent(session, cid) == 0
    with request_transaction(session):
        assert order(session, mid, 10000, order_id="req-1")["points"] == 200
    assert _spent(session, cid) == 100
    _exact(session, cid)


def test_an_accrual_inside_a_bare_savepoint_of_a_unit_of_work(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    """Two accruals in one request transaction, the first in a savepoint rolled back."""
    cid = campaign(session, clock, "Bare", budget=150)
    mid = member()
    with request_transaction(session):
        sp = session.begin_nested()
        assert order(session, mid, 10000, order_id="b-1")["points"] == 200
        sp.rollback()
        assert order(session, mid, 10000, order_id="b-2")["points"] == 200
        assert order(session, mid, 10000, order_id="b-3")["points"] == 150
    assert _spent(session, cid) == 150
    _exact(session, cid)


def test_import_of_orders_exhausting_the_budget(
    app: Flask, session: Session, member: Callable[..., str], clock: FrozenClock, tmp_path: Path
) -> None:
    cid = service.create_campaign(
        session,
        actor="manager",
        name="Import",
        starts_at=clock.now() - dt.timedelta(days=400),
        ends_at=clock.now() + dt.timedelta(days=1),
        multiplier=2,
        budget=250,
    ).id
    mid = member()
    path = tmp_path / "orders.jsonl"
    lines = [
        {
            "order_id": f"imp-{i}",
            "member_id": mid,
            "total": 10000,
            "currency": "USD",
            "placed_at": (clock.now() - dt.timedelta(days=300 - i)).isoformat(),
        }
        for i in range(5)
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines))
    report = imports.import_orders(session, path, channel_id="chn_default")
    assert report.failed == 0, report.failures
    assert report.recorded == 5
    assert _spent(session, cid) == 250
    _exact(session, cid)
    again = imports.import_orders(session, path, channel_id="chn_default")
    assert again.already == 5
    assert _spent(session, cid) == 250
