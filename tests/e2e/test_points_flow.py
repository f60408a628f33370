"""The storefront's points flow end to end, on PostgreSQL and on SQLite: enrol, accrue,
activate, hold, capture, refund, redeem, history; the invariants hold at the end."""

from __future__ import annotations

import datetime as dt

from flask import Flask

from loyalty.auth.rules import SCOPES
from loyalty.clock import FrozenClock, use_clock
from loyalty.db import get_database
from loyalty.ledger.invariants import verify
from tests.conftest import bearer_headers


def test_storefront_points_flow(e2e_app: Flask) -> None:
    clock = FrozenClock(dt.datetime(2026, 5, 1, 9, tzinfo=dt.UTC))
    use_clock(e2e_app, clock)
    try:
        auth = bearer_headers(e2e_app, SCOPES)
        http = e2e_app.test_client()
        member = http.post("/v1/members", json={"external_id": "c-1"}, headers=auth).json
        assert member is not None
        url = f"/v1/members/{member['id']}"

        order = http.post(
            "/v1/orders",
            json={"order_id": "W-1", "member_id": member["id"], "total": 25999, "currency": "EUR"},
            headers=auth,
        )
        assert order.status_code == 201
        assert order.json is not None and order.json["points"] == 259
        assert http.get(f"{url}/balance", headers=auth).json["pending"] == 259  # type: ignore[index]

        clock.advance(dt.timedelta(days=14))
        balance = http.get(f"{url}/balance", headers=auth).json
        assert balance is not None and (balance["available"], balance["pending"]) == (259, 0)

        hold = http.post(f"{url}/holds", json={"points": 100}, headers=auth).json
        assert hold is not None
        captured = http.post(f"/v1/holds/{hold['id']}/capture", json={"points": 60}, headers=auth)
        assert captured.status_code == 200
        assert captured.json["balance"] == {"available": 199, "pending": 0, "held": 0}  # type: ignore[index]

        refund = http.post(
            "/v1/orders/W-1/refunds", json={"refund_id": "W-1-R", "amount": 12999}, headers=auth
        )
        assert refund.status_code == 201
        assert refund.json["points_reversed"] == 129  # type: ignore[index]

        redeemed = http.post(
            f"{url}/redemptions", json={"points": 70}, headers={**auth, "Idempotency-Key": "r1"}
        )
        again = http.post(
            f"{url}/redemptions", json={"points": 70}, headers={**auth, "Idempotency-Key": "r1"}
        )
        assert (redeemed.status_code, again.data) == (201, redeemed.data)
        assert redeemed.json["balance"]["available"] == 0  # type: ignore[index]

        history = http.get(f"{url}/ledger", headers=auth).json
        assert history is not None
        assert [e["kind"] for e in history["items"]] == [
            "redemption",
            "reversal",
            "capture",
            "hold",
            "activation",
            "accrual",
        ]
        with e2e_app.app_context():
            session = get_database(e2e_app).sessionmaker()
            assert verify(session) == []
            session.close()
    finally:
        use_clock(e2e_app, None)
