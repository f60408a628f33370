"""Each wallet keeps its member's spend and order count (invariant 8): the money of the orders
less refunds, in major units, every currency added exactly, and the orders not wholly refunded
(total 0 aside). Badges and tiers on all-time spend or orders read them instead of adding up
the member's whole history."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.orm import Session

from loyalty import migrator
from loyalty.cli import main
from loyalty.ledger import service
from loyalty.ledger.invariants import verify
from loyalty.ledger.models import Wallet
from loyalty.members import service as members_service
from tests.ledger.conftest import order
from tests.test_migrations import empty_database, empty_postgresql  # noqa: F401

# Money that needs every digit kept: a trillion yen twice, with cents, thousandths and
# ten-thousandths added, is past a float's 15 digits (and a trillion is what an order may earn).
JPY = 10**12 - 1
ORDERS = [
    ("s-usd", 12345, "USD"),
    ("s-jpy-1", JPY, "JPY"),
    ("s-jpy-2", JPY, "JPY"),
    ("s-bhd", 1001, "BHD"),
    ("s-zero", 0, "USD"),
    ("s-clf", 12345, "CLF"),  # four decimals
]


def _wallet(session: Session, member_id: str) -> tuple[Decimal, int]:
    session.expire_all()
    wallet = session.scalars(select(Wallet).where(Wallet.member_id == member_id)).one()
    return wallet.spend, wallet.order_count


def _refund(session: Session, order_id: str, refund_id: str, amount: int) -> None:
    service.refund_order(
        session, order_id=order_id, refund_id=refund_id, amount=amount, client_id="cli_test"
    )


def test_spend_and_order_count_follow_orders_and_refunds_exactly(db: Session) -> None:
    member, _ = members_service.enroll_member(db, external_id="spend-1")
    assert _wallet(db, member.id) == (0, 0)
    for order_id, total, currency in ORDERS:
        order(db, member.id, total, order_id=order_id, currency=currency)
    placed = Decimal("123.45") + 2 * JPY + Decimal("1.001") + Decimal("1.2345")
    assert _wallet(db, member.id) == (placed, 5)  # the order of total 0 is not counted

    _refund(db, "s-usd", "r-usd-part", 45)
    assert _wallet(db, member.id) == (placed - Decimal("0.45"), 5)
    _refund(db, "s-bhd", "r-bhd-part", 1)
    _refund(db, "s-bhd", "r-bhd-rest", 1000)  # wholly refunded now: no longer counted
    assert _wallet(db, member.id) == (placed - Decimal("0.45") - Decimal("1.001"), 4)
    _refund(db, "s-bhd", "r-bhd-rest", 1000)  # the same refund again changes nothing
    _refund(db, "s-usd", "r-usd-rest", 12300)
    assert _wallet(db, member.id) == (2 * JPY + Decimal("1.2345"), 3)
    assert verify(db) == []


def test_the_wallets_measure_equals_the_sum_over_the_orders(app: Flask, session: Session) -> None:
    """On PostgreSQL the badges read `order_measure`: over all time from the wallet, over a
    window from the orders; a window wider than the history gives the same values."""
    member, _ = members_service.enroll_member(session, external_id="spend-2")
    for order_id, total, currency in ORDERS:
        order(session, member.id, total, order_id=f"m-{order_id}", currency=currency)
    _refund(session, "m-s-bhd", "m-r-bhd", 1001)
    _refund(session, "m-s-usd", "m-r-usd", 45)
    window = {
        "member_id": member.id,
        "since": dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
        "until": dt.datetime(2100, 1, 1, tzinfo=dt.UTC),
    }
    for measure in ("spend", "orders"):
        kept = service.order_measure(measure, True, True)
        summed = service.order_measure(measure, False, False)
        assert "wallets" in str(kept) and "orders" not in str(kept).split("FROM")[1]
        assert session.scalar(kept, window) == session.scalar(summed, window)
    assert session.scalar(service.order_measure("spend", True, True), window) == 2 * JPY + 124
    assert session.scalar(service.order_measure("orders", True, True), window) == 4
    assert session.scalar(service.order_measure("spend", True, True), {"member_id": "mem_x"}) == 0


@pytest.mark.parametrize(
    "change, detail",
    [
        ({"spend": Wallet.spend + Decimal("0.01")}, "spend 10.01"),
        ({"order_count": Wallet.order_count + 1}, "order count 2"),
    ],
)
def test_the_invariant_catches_a_wallet_that_drifted(
    db: Session, change: dict[str, object], detail: str
) -> None:
    member, _ = members_service.enroll_member(db, external_id="spend-3")
    order(db, member.id, 1000, order_id="d-1")
    assert verify(db) == []
    db.execute(update(Wallet).where(Wallet.member_id == member.id).values(change))
    (violation,) = verify(db)
    assert violation.invariant == 8 and detail in violation.detail, violation
    db.rollback()


def test_recount_corrects_wallets_whose_orders_were_not_counted(
    e2e_app: Flask, db: Session
) -> None:
    """As if a process of the version before 0019 had taken orders after the upgrade: the
    wallets' figures left behind; `loyalty ledger recount` counts them again, a batch of
    wallets at a time, and touches only those that are wrong."""
    members = [members_service.enroll_member(db, external_id=f"re-{n}")[0].id for n in range(5)]
    for n, member_id in enumerate(members):
        for k, (_, total, currency) in enumerate(ORDERS[: n + 1]):
            order(db, member_id, total, order_id=f"re-{n}-{k}", currency=currency)
    _refund(db, "re-4-0", "re-r-4", 12345)  # wholly refunded: not counted
    stale = members[1:4]
    db.execute(
        update(Wallet)
        .where(Wallet.member_id.in_(stale))
        .values(spend=Decimal(0), order_count=Wallet.order_count - 1)
    )
    db.commit()
    assert {v.wallet_id for v in verify(db)} == {
        db.scalar(select(Wallet.id).where(Wallet.member_id == m)) for m in stale
    }
    db.close()
    runner = e2e_app.test_cli_runner()
    result = runner.invoke(main, ["ledger", "recount", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "Wallets recounted: 3 corrected." in result.output
    assert verify(db) == []
    assert _wallet(db, members[4]) == (2 * JPY + Decimal("1.001"), 3)
    result = runner.invoke(main, ["ledger", "recount"])
    assert "Wallets recounted: 0 corrected." in result.output


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_the_migration_fills_them_from_the_orders(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = empty_database(backend, request, tmp_path)
    config = migrator.alembic_config(url)
    migrator.upgrade(config, "0018_lots_fillfactor")
    engine = create_engine(url)
    now = "2026-01-01 00:00:00+00"
    with engine.begin() as conn:
        for n in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO members (id, external_id, status, referral_code, metadata,"
                    " enrolled_at, created_at, updated_at, timezone, marketing_consent)"
                    " VALUES (:id, :id, 'active', :id, '{}', :now, :now, :now, 'UTC', false)"
                ),
                {"id": f"mem_{n}", "now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO wallets (id, member_id, available, pending, held, debt,"
                    " lifetime_earned, created_at, updated_at)"
                    " VALUES (:id, :member, 0, 0, 0, 0, 0, :now, :now)"
                ),
                {"id": f"wal_{n}", "member": f"mem_{n}", "now": now},
            )
        for pk, total, refunded, currency in (
            ("ord_1", 10**15, 0, "JPY"),
            ("ord_2", 10**15, 1, "JPY"),
            ("ord_3", 12345, 45, "USD"),
            ("ord_4", 100, 100, "USD"),
            ("ord_5", 0, 0, "USD"),
            ("ord_6", 1001, 0, "BHD"),
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
    migrator.upgrade(config)
    migrator.check(config)
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, spend, order_count FROM wallets ORDER BY id")).all()
    engine.dispose()
    assert [(pk, Decimal(spend), count) for pk, spend, count in rows] == [
        ("wal_1", 2 * 10**15 - 1 + Decimal("123.00") + Decimal("1.001"), 4),
        ("wal_2", Decimal(0), 0),
    ]
    migrator.downgrade(config, "0018_lots_fillfactor")
    migrator.upgrade(config)
