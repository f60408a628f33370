"""Badges for spending, end to end on PostgreSQL and on SQLite: each level is given once, as
the orders cross its threshold, with its bonus points; the invariants hold at the end."""

from __future__ import annotations

import datetime as dt

from flask import Flask

from loyalty.auth.rules import SCOPES
from loyalty.clock import FrozenClock, use_clock
from loyalty.db import get_database
from loyalty.ledger.invariants import verify
from tests.conftest import bearer_headers


def test_spend_badge_levels_are_given_once_as_orders_cross_them(e2e_app: Flask) -> None:
    clock = FrozenClock(dt.datetime(2026, 5, 1, 9, tzinfo=dt.UTC))
    use_clock(e2e_app, clock)
    try:
        _spend_badge_flow(e2e_app)
    finally:
        use_clock(e2e_app, None)


def _spend_badge_flow(e2e_app: Flask) -> None:
    auth = bearer_headers(e2e_app, SCOPES)
    http = e2e_app.test_client()
    levels = [
        {"name": "bronze", "threshold": 100, "bonus_points": 5},
        {"name": "silver", "threshold": 300, "bonus_points": 15},
    ]
    badge = http.post(
        "/v1/program/badges",
        json={"name": "Spender", "rule": "spend", "levels": levels},
        headers=auth,
    )
    assert badge.status_code == 201, badge.json
    member = http.post("/v1/members", json={"external_id": "s-1"}, headers=auth).json
    assert member is not None
    url = f"/v1/members/{member['id']}"

    def buy(order_id: str, total: int) -> None:
        body = {"order_id": order_id, "member_id": member["id"], "total": total, "currency": "USD"}
        answer = http.post("/v1/orders", json=body, headers=auth)
        assert answer.status_code == 201, answer.json

    def earned() -> list[tuple[str, int]]:
        badges = http.get(f"{url}/badges", headers=auth).json
        assert badges is not None
        return sorted((award["level_name"], award["points"]) for award in badges["earned"])

    buy("o-1", 6000)  # 60 USD: no level yet
    assert earned() == []
    buy("o-2", 6000)  # 120 USD: bronze
    assert earned() == [("bronze", 5)]
    buy("o-3", 6000)  # 180 USD: bronze already given
    buy("o-4", 6000)  # 240 USD
    assert earned() == [("bronze", 5)]
    buy("o-5", 9000)  # 330 USD: silver
    assert earned() == [("bronze", 5), ("silver", 15)]
    buy("o-6", 1000)
    assert earned() == [("bronze", 5), ("silver", 15)]
    balance = http.get(f"{url}/balance", headers=auth).json
    assert balance is not None
    assert balance["pending"] + balance["available"] == 340 + 5 + 15  # orders + bonuses

    session = get_database(e2e_app).sessionmaker()
    try:
        assert verify(session) == []
    finally:
        session.close()
