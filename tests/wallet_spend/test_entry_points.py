"""Review 6: every way an order or refund enters (HTTP with and without Idempotency-Key,
`loyalty import`), the migration on a database with orders (down and up again), and the
at-once statement's parameter count."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import Session

from loyalty import migrator
from loyalty.cli import main
from loyalty.clock import FrozenClock
from loyalty.members import service as members_service
from tests.ledger.conftest import order
from tests.test_migrations import empty_database, empty_postgresql  # noqa: F401
from tests.wallet_spend.helpers import agrees

Headers = dict[str, str]


@pytest.fixture
def api(client: FlaskClient, headers: Headers, clock: FrozenClock) -> Callable[..., Any]:
    def call(method: str, url: str, body: Any = None, **extra: str) -> Any:
        kwargs: dict[str, Any] = {"headers": {**headers, **extra}}
        if body is not None:
            kwargs["json"] = body
        return getattr(client, method)(url, **kwargs)

    return call


def test_e01_http_orders_and_refunds_replayed(api: Callable[..., Any], session: Session) -> None:
    member_id = api("post", "/v1/members", {"external_id": "r6-http"}).json["id"]
    body = {"order_id": "H-1", "member_id": member_id, "total": 12345, "currency": "USD"}
    for key in ("k-1", "k-1", None, None):
        extra = {"Idempotency-Key": key} if key else {}
        response = api("post", "/v1/orders", body, **extra)
        assert response.status_code in (200, 201), response.json
    body2 = {**body, "order_id": "H-2", "currency": "KWD", "total": 1}
    for _ in range(2):
        api("post", "/v1/orders", body2, **{"Idempotency-Key": "k-2"})
    for _ in range(2):
        r = api(
            "post",
            "/v1/orders/H-1/refunds",
            {"refund_id": "R-1", "amount": 12345},
            **{"Idempotency-Key": "k-3"},
        )
        assert r.status_code in (200, 201), r.json
        r = api("post", "/v1/orders/H-1/refunds", {"refund_id": "R-1", "amount": 12345})
        assert r.status_code in (200, 201), r.json
    assert agrees(session, member_id) == (Decimal("0.001"), 1)


def test_e02_import_orders_and_refunds(
    app: Flask, session: Session, clock: FrozenClock, tmp_path: Path
) -> None:
    ada, _ = members_service.enroll_member(session, external_id="r6-ada")
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "order_id,external_id,total,currency,placed_at\n"
        "I-1,r6-ada,12000,USD,2024-05-01T10:00:00Z\n"
        "I-2,r6-ada,5,JPY,2025-12-24T18:00:00+01:00\n"
        "I-3,r6-ada,0,USD,2025-12-24T18:00:00+01:00\n"
        "I-4,r6-ada,7,BHD,2025-01-01T00:00:00Z\n"
    )
    runner = app.test_cli_runner()
    for _ in range(2):
        runner.invoke(main, ["import", "orders", str(orders)])
    refunds = tmp_path / "refunds.jsonl"
    refunds.write_text(
        json.dumps({"order_id": "I-1", "refund_id": "IR-1", "amount": 6000})
        + "\n"
        + json.dumps({"order_id": "I-4", "refund_id": "IR-2", "amount": 7})
        + "\n"
    )
    for _ in range(2):
        runner.invoke(main, ["import", "refunds", str(refunds)])
    assert agrees(session, ada.id) == (Decimal("65.00"), 2)


def test_e03_the_accrual_statement_keeps_at_most_50_parameters(
    session: Session, clock: FrozenClock
) -> None:
    """The commit says 49 parameters (psycopg keeps its conversion up to 50)."""
    m = members_service.enroll_member(session, external_id="r6-params")[0].id
    seen: list[int] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "wallet_update" in statement:
            seen.append(len(parameters))

    engine = session.get_bind().engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        order(session, m, 1000, order_id="e03-a")  # earns
        order(session, m, 0, order_id="e03-b")  # earns nothing
    finally:
        event.remove(engine, "before_cursor_execute", before)
    print("e03 parameters", seen)
    assert seen and max(seen) <= 50, seen


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_e04_migration_down_and_up_again_refills(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Orders recorded at head (through the service-free SQL), spend drifted, downgrade to
    0018 and upgrade again: the wallets are filled afresh from the orders."""
    url = empty_database(backend, request, tmp_path)
    config = migrator.alembic_config(url)
    migrator.upgrade(config)
    engine = create_engine(url)
    now = "2026-01-01 00:00:00+00"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO members (id, external_id, status, referral_code, metadata,"
                " enrolled_at, created_at, updated_at, timezone, marketing_consent)"
                " VALUES ('mem_1', 'mem_1', 'active', 'mem_1', '{}', :now, :now, :now, 'UTC',"
                " false)"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO wallets (id, member_id, available, pending, held, debt,"
                " lifetime_earned, created_at, updated_at, spend, order_count)"
                " VALUES ('wal_1', 'mem_1', 0, 0, 0, 0, 0, :now, :now, '999', 9)"
            ),
            {"now": now},
        )
        for pk, total, refunded, currency in (
            ("ord_1", 9223372036854775807, 0, "JPY"),
            ("ord_2", 12345, 12345, "USD"),
            ("ord_3", 1, 0, "CLF"),
            ("ord_4", 5, 0, "xts"),  # no minor unit (as 0)
        ):
            conn.execute(
                text(
                    "INSERT INTO orders (id, channel_id, client_id, order_id, member_id,"
                    " wallet_id, total, currency, items, placed_at, points, points_reversed,"
                    " amount_refunded, activates_at, breakdown, request_hash, response,"
                    " created_at) VALUES (:pk, 'chn_default', NULL, :pk, 'mem_1', 'wal_1',"
                    " :total, :currency, '[]', :now, 0, 0, :refunded, :now, '[]', 'h', '{}',"
                    " :now)"
                ),
                {"pk": pk, "total": total, "refunded": refunded, "currency": currency, "now": now},
            )
    engine.dispose()
    migrator.downgrade(config, "0018_lots_fillfactor")
    migrator.upgrade(config)
    migrator.check(config)
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, spend, order_count FROM wallets")).all()
    engine.dispose()
    assert [(pk, Decimal(spend), n) for pk, spend, n in rows] == [
        ("wal_1", Decimal(9223372036854775807) + Decimal("0.0001") + 5, 3)
    ]


def test_e05_demo_seeding_keeps_the_invariants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from loyalty.ledger.invariants import verify
    from loyalty.ledger.models import Wallet

    for name in ("LOYALTY_DATABASE_URL", "LOYALTY_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOYALTY_INSTANCE_PATH", str(tmp_path))
    result = CliRunner().invoke(main, ["demo", "--no-serve", "--reset"])
    assert result.exit_code == 0, result.output
    engine = create_engine(f"sqlite:///{tmp_path / 'loyalty.db'}")
    with Session(engine) as session:
        assert verify(session) == []
        wallets = list(session.query(Wallet))
        assert sum(w.order_count for w in wallets) > 0
        for wallet in wallets:
            agrees(session, wallet.member_id)
    engine.dispose()


def test_e06_the_largest_orders_allowed(session: Session, clock: FrozenClock) -> None:
    """10**15 minor units (the API's MAX_MONEY) in CLF earn 10**11 points: accepted."""
    m = members_service.enroll_member(session, external_id="r6-max")[0].id
    for n in range(3):
        order(session, m, 10**15, order_id=f"e06-{n}", currency="CLF")
    from loyalty.ledger import service

    service.refund_order(session, order_id="e06-0", refund_id="e06-r", amount=10**15 - 1)
    assert agrees(session, m) == (Decimal(2 * 10**11) + Decimal("0.0001"), 3)
