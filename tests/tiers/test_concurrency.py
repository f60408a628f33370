"""Several job runners at once on real PostgreSQL connections: each member's tier changes
once."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import get_database
from loyalty.ledger import service as ledger_service
from loyalty.members import service as members_service
from loyalty.tiers import service
from loyalty.tiers.models import TierChange
from tests.tiers.conftest import make_ladder, policy

pytestmark = pytest.mark.concurrency
MEMBERS = 24
RUNNERS = 2


def run_together(app: Flask, work: Callable[[Session], dict[str, int]]) -> list[dict[str, int]]:
    barrier = threading.Barrier(RUNNERS)

    def run(_: int) -> dict[str, int]:
        with app.app_context():
            session = get_database(app).sessionmaker()
            try:
                barrier.wait()
                return work(session)
            finally:
                session.close()

    with ThreadPoolExecutor(RUNNERS) as pool:
        return list(pool.map(run, range(RUNNERS)))


def seed(app: Flask, *, calendar: bool) -> list[str]:
    """Members who earned 1200 points each before the ladder existed."""
    with app.app_context():
        session = get_database(app).sessionmaker()
        try:
            ids = []
            for index in range(MEMBERS):
                member, _ = members_service.enroll_member(session, external_id=f"c-{index}")
                ledger_service.accrue_order(
                    session,
                    client_id="cli_test",
                    order_id=f"c-{index}",
                    member_id=member.id,
                    total=120000,
                    currency="USD",
                )
                ids.append(member.id)
            make_ladder(session)
            if calendar:
                policy(session, window="calendar_year")
        finally:
            session.close()
    return ids


def changes(app: Flask) -> Counter[tuple[str, str]]:
    with app.app_context():
        session = get_database(app).sessionmaker()
        try:
            rows = session.execute(select(TierChange.member_id, TierChange.kind)).all()
        finally:
            session.close()
    return Counter((member_id, kind) for member_id, kind in rows)


def test_two_runners_upgrade_each_member_once(app: Flask, clock: FrozenClock) -> None:
    ids = seed(app, calendar=False)
    results = run_together(app, lambda s: service.run_due(s, batch_size=5))
    assert sum(r["tier upgrades"] for r in results) == MEMBERS
    assert changes(app) == Counter({(m, "upgrade"): 1 for m in ids})
    again = run_together(app, lambda s: service.run_due(s, batch_size=5))
    assert all(not any(r.values()) for r in again)


def test_two_runners_review_each_member_once(app: Flask, clock: FrozenClock) -> None:
    ids = seed(app, calendar=True)
    run_together(app, lambda s: service.run_due(s, batch_size=5))
    clock.set(dt.datetime(2028, 1, 1, tzinfo=dt.UTC))  # 2026 renews; 2027 had nothing
    results = run_together(app, lambda s: service.run_due(s, batch_size=4))
    assert sum(r["tier renewals"] for r in results) == MEMBERS
    assert sum(r["tier downgrades"] for r in results) == MEMBERS
    expected = Counter({(m, kind): 1 for m in ids for kind in ("upgrade", "renewal", "downgrade")})
    assert changes(app) == expected
    with app.app_context():
        session = get_database(app).sessionmaker()
        try:
            tiers = service.current_tiers(session, ids)
        finally:
            session.close()
    assert {ref.code for ref in tiers.values()} == {"silver"}
