"""Orders of budgeted campaigns through the HTTP API, with and without Idempotency-Key (a
review of 8f0a875)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from loyalty import clock as app_clock
from loyalty.db import get_database
from loyalty.earning import service
from loyalty.earning.models import Campaign
from loyalty.ledger.invariants import verify
from tests.campaign_charge.helpers import given_by_orders
from tests.conftest import bearer_headers
from tests.ledger.conftest import programme as programme  # a fixture
from tests.support import race

KEY = "Idempotency-Key"
SCOPES = ("members:write", "points:accrue", "members:read")


def _campaign(app: Flask, budget: int, *, bonus: int | None = None) -> str:
    with app.app_context():
        s = get_database(app).sessionmaker()
        try:
            now = app_clock.now()
            return service.create_campaign(
                s,
                actor="manager",
                name=f"Http {budget}",
                starts_at=now - dt.timedelta(days=1),
                ends_at=now + dt.timedelta(days=1),
                multiplier=None if bonus else Decimal(2),
                bonus_points=bonus,
                budget=budget,
            ).id
        finally:
            s.close()


def _exact(app: Flask, campaign_id: str) -> tuple[int, int]:
    with app.app_context():
        s = get_database(app).sessionmaker()
        try:
            row = s.get(Campaign, campaign_id)
            assert row is not None and row.budget is not None
            assert row.spent <= row.budget
            assert row.spent == given_by_orders(s).get(campaign_id, 0), (
                row.spent,
                given_by_orders(s),
            )
            assert verify(s) == []
            return row.spent, row.budget
        finally:
            s.close()


def _members(app: Flask, headers: dict[str, str], prefix: str, count: int) -> list[str]:
    http = app.test_client()
    ids = []
    for i in range(count):
        r = http.post("/v1/members", json={"external_id": f"{prefix}-{i}"}, headers=headers)
        assert r.status_code == 201, r.get_json()
        ids.append(r.get_json()["id"])
    return ids


def _post(app: Flask, headers: dict[str, str], body: dict[str, Any], key: str | None) -> Any:
    extra = {KEY: key} if key else {}
    return app.test_client().post("/v1/orders", json=body, headers={**headers, **extra})


@pytest.mark.concurrency
@pytest.mark.parametrize("bonus", [None, 70], ids=["multiplier", "bonus"])
def test_http_race_with_and_without_keys(app: Flask, clock: Any, bonus: int | None) -> None:
    headers = bearer_headers(app, SCOPES)
    cid = _campaign(app, 450, bonus=bonus)
    ids = _members(app, headers, "http", 12)
    bodies = [
        {"member_id": ids[i], "order_id": f"http-{i}", "total": 10000, "currency": "USD"}
        for i in range(12)
    ]

    def work(i: int, _s: Session) -> Any:
        r = _post(app, headers, bodies[i], f"k-{i}" if i % 2 == 0 else None)
        return r.status_code, r.get_json()

    results = race(app, 12, work)
    assert all(not isinstance(r, Exception) and r[0] == 201 for r in results), results
    assert _exact(app, cid) == (450, 450)
    for i in range(12):  # replays, with the same key or none
        r = _post(app, headers, bodies[i], f"k-{i}" if i % 2 == 0 else None)
        assert r.status_code in (200, 201), r.get_json()
        assert r.get_json() == results[i][1]  # type: ignore[index]
        # and the other way round: keyed orders replayed without the key, and vice versa
        r = _post(app, headers, bodies[i], None if i % 2 == 0 else f"k2-{i}")
        assert r.status_code in (200, 201), r.get_json()
        assert r.get_json()["points"] == results[i][1]["points"]  # type: ignore[index]
    assert _exact(app, cid) == (450, 450)


@pytest.mark.concurrency
def test_http_race_with_the_demo_programme(app: Flask, clock: Any, programme: None) -> None:
    """Tiers, badges and the demo's campaigns: orders that move tiers and award badges, half
    charging at once (request transaction), half at the commit. No 5xx, budgets exact."""
    headers = bearer_headers(app, SCOPES)
    cid = _campaign(app, 900)
    ids = _members(app, headers, "demo", 6)

    def work(i: int, _s: Session) -> Any:
        out = []
        for k in range(3):
            body = {
                "member_id": ids[i % 6],
                "order_id": f"demo-{i}-{k}",
                "total": 60000 + 1000 * k,
                "currency": "USD",
            }
            r = _post(app, headers, body, f"dk-{i}-{k}" if (i + k) % 2 else None)
            out.append((r.status_code, r.get_json()))
        return out

    results = race(app, 12, work)
    bad = [r for rs in results for r in (rs if isinstance(rs, list) else [(0, rs)]) if r[0] != 201]
    assert not bad, bad
    with app.app_context():
        s = get_database(app).sessionmaker()
        try:
            given = given_by_orders(s)
            for row in s.query(Campaign).all():
                if row.budget is not None:
                    assert row.spent <= row.budget
                    assert row.spent == given.get(row.id, 0), (row.name, row.spent, given)
        finally:
            s.close()
    assert _exact(app, cid)[0] == 900


def test_http_budget_exhaustion_on_each_backend(e2e_app: Flask) -> None:
    headers = bearer_headers(e2e_app, SCOPES)
    cid = _campaign(e2e_app, 250)
    ids = _members(e2e_app, headers, "e2e", 2)
    points = []
    for i in range(6):
        body = {"member_id": ids[i % 2], "order_id": f"e2e-{i}", "total": 10000, "currency": "USD"}
        r = _post(e2e_app, headers, body, f"e-{i}" if i % 2 else None)
        assert r.status_code == 201, r.get_json()
        points.append(r.get_json()["points"])
        again = _post(e2e_app, headers, body, f"e-{i}" if i % 2 else None)
        assert again.get_json() == r.get_json()
    assert points == [200, 200, 150, 100, 100, 100], points
    assert _exact(e2e_app, cid) == (250, 250)


def test_http_order_with_bad_items_after_pricing_is_not_charged(e2e_app: Flask) -> None:
    """An order refused after pricing (too many points) charges nothing, with or without a
    key."""
    headers = bearer_headers(e2e_app, SCOPES)
    cid = _campaign(e2e_app, 10**12)
    (mid,) = _members(e2e_app, headers, "big", 1)
    for key in (None, "big-k"):
        body = {"member_id": mid, "order_id": f"big-{key}", "total": 10**15, "currency": "USD"}
        r = _post(e2e_app, headers, body, key)
        assert r.status_code in (400, 422), (r.status_code, r.get_json())
    assert _exact(e2e_app, cid) == (0, 10**12)


@pytest.mark.concurrency
@pytest.mark.parametrize("key", [None, "topped-key"], ids=["no-key", "key"])
def test_http_order_while_the_budget_changes_before_each_charge(
    app: Flask, clock: Any, key: str | None
) -> None:
    """The budget changes between pricing and the charge of each attempt (three changes):
    without a key the order runs again three times and answers 503; with a key (charged as
    priced, in the request's transaction) it is priced under the lock and answers 201."""
    import threading

    from sqlalchemy import event

    from tests.campaign_charge.helpers import changer
    from tests.support import in_thread

    headers = bearer_headers(app, SCOPES)
    cid = _campaign(app, 1000)
    (mid,) = _members(app, headers, f"topped-{key}", 1)
    engine = get_database(app).engine
    order_thread: list[int] = []
    changes: list[int] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if (
            order_thread
            and threading.get_ident() == order_thread[0]
            and statement.startswith("UPDATE campaigns")
            and len(changes) < 3
        ):
            budget = 1000 + 10 * (len(changes) + 1)
            changes.append(budget)

            def change() -> None:
                s = get_database(app).sessionmaker()
                try:
                    changer(cid, {"budget": budget})(s)
                finally:
                    s.close()

            done, _ = in_thread(app, change)
            done.join()

    event.listen(engine, "before_cursor_execute", before)

    def run() -> Any:
        order_thread.append(threading.get_ident())
        body = {"member_id": mid, "order_id": f"topped-{key}", "total": 10000, "currency": "USD"}
        r = _post(app, headers, body, key)
        return r.status_code, r.get_json()

    try:
        thread, outcome = in_thread(app, run)
        thread.join()
    finally:
        event.remove(engine, "before_cursor_execute", before)
    _exact(app, cid)
    assert outcome[0][0] == 201, (outcome, changes)
