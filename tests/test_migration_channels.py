"""Migration 0009 (channels) on a database with data."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from loyalty import migrator

NOW = "2026-01-01 00:00:00+00"
# Client ids as the service makes them ("cli_" and a ULID).
CLIENTS = (
    "cli_01JQ7Z3V4K8M2N6P9R5T1W3X7A",
    "cli_01JQ7Z3V4K8M2N6P9R5T1W3X7B",
    "cli_01JQ7Z3V4K8M2N6P9R5T1W3X7C",
)


def test_channels_migrate_clients_with_long_equal_names(tmp_path: Path) -> None:
    """Rotated credentials usually keep their client's name (up to 100 characters). When
    two such clients each need a channel of their own (they reported an order id another
    client also reported), each channel's name keeps the client id whole, so the names stay
    unique (cutting "<name> (<client id>)" to 100 characters used to make them equal and stop
    the upgrade)."""
    url = f"sqlite:///{tmp_path / 'long-names.db'}"
    config = migrator.alembic_config(url)
    migrator.upgrade(config, "0008_ledger_reconciliation")
    name = "EU web shop, order webhooks (production, rotated every quarter by the platform team)"
    assert len(name) <= 100
    engine = create_engine(url)
    with engine.begin() as conn:
        for client in CLIENTS:
            conn.execute(
                text(
                    "INSERT INTO api_clients (id, name, secret_hash, scopes, created_at) "
                    "VALUES (:id, :name, 'x', '[]', :now)"
                ),
                {"id": client, "name": name, "now": NOW},
            )
        conn.execute(
            text(
                "INSERT INTO members (id, external_id, status, referral_code, metadata, "
                "enrolled_at, created_at, updated_at, timezone, marketing_consent) "
                "VALUES ('mem_1', 'c1', 'active', 'CODE1', '{}', :now, :now, :now, 'UTC', 0)"
            ),
            {"now": NOW},
        )
        conn.execute(
            text(
                "INSERT INTO wallets (id, member_id, available, pending, held, debt, "
                "lifetime_earned, created_at, updated_at) "
                "VALUES ('wal_1', 'mem_1', 0, 0, 0, 0, 0, :now, :now)"
            ),
            {"now": NOW},
        )
        for pk, client in zip(("ord_1", "ord_2", "ord_3"), CLIENTS, strict=True):
            conn.execute(
                text(
                    "INSERT INTO orders (id, client_id, order_id, member_id, wallet_id, total, "
                    "currency, items, placed_at, points, points_reversed, amount_refunded, "
                    "activates_at, breakdown, request_hash, response, created_at) VALUES "
                    "(:pk, :client, '1001', 'mem_1', 'wal_1', 0, 'USD', '[]', :now, 0, 0, "
                    "0, :now, '[]', 'h', '{}', :now)"
                ),
                {"pk": pk, "client": client, "now": NOW},
            )
    engine.dispose()

    migrator.upgrade(config)

    engine = create_engine(url)
    with engine.connect() as conn:
        orders: dict[str, str] = dict(conn.execute(text("SELECT id, channel_id FROM orders")).all())
    engine.dispose()
    assert len(set(orders.values())) == 3
