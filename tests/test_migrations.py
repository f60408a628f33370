"""Migrations are code under test: one head, no drift, and a full down/up round trip."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from pytest_postgresql.janitor import DatabaseJanitor
from sqlalchemy import Engine, create_engine, inspect, make_url, text
from sqlalchemy.exc import OperationalError

from loyalty import migrator
from loyalty.cli import main
from loyalty.db import Base


def test_single_head() -> None:
    script = ScriptDirectory.from_config(migrator.alembic_config())
    assert len(script.get_heads()) == 1


def test_revision_ids_are_sequential_file_stems() -> None:
    script = ScriptDirectory.from_config(migrator.alembic_config())
    revisions = list(reversed(list(script.walk_revisions())))
    for number, rev in enumerate(revisions, start=1):
        assert rev.path is not None
        assert Path(rev.path).stem == rev.revision
        assert re.fullmatch(rf"{number:04d}_[a-z0-9_]+", rev.revision)


def test_next_revision_id_continues_the_sequence() -> None:
    config = migrator.alembic_config()
    count = len(list(ScriptDirectory.from_config(config).walk_revisions()))
    assert migrator.next_revision_id(config, "Points ledger!") == f"{count + 1:04d}_points_ledger"


def test_no_drift_between_models_and_migrations_on_postgresql(database_url: str) -> None:
    migrator.check(migrator.alembic_config(database_url))


@pytest.fixture
def empty_postgresql(database_url: str) -> Iterator[str]:
    url = make_url(database_url)
    name = f"{url.database}_roundtrip"
    janitor = DatabaseJanitor(
        user=url.username or "postgres",
        password=url.password,
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        dbname=name,
    )
    janitor.drop()
    janitor.init()
    yield url.set(database=name).render_as_string(hide_password=False)
    janitor.drop()


def empty_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database of ``backend`` (``postgresql`` or ``sqlite``)."""
    if backend == "postgresql":
        url: str = request.getfixturevalue("empty_postgresql")
        return url
    return f"sqlite:///{tmp_path / 'empty.db'}"


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_upgrade_downgrade_upgrade_round_trip(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = empty_database(backend, request, tmp_path)
    config = migrator.alembic_config(url)
    expected = {table.name for table in Base.metadata.sorted_tables}
    migrator.upgrade(config)
    assert _tables(url) == expected
    migrator.check(config)
    migrator.downgrade(config, "base")
    assert _tables(url) == set()
    migrator.upgrade(config)
    assert _tables(url) == expected


def test_loyalty_db_upgrade_creates_a_working_sqlite_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOYALTY_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    runner = CliRunner()
    result = runner.invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["db", "check"])
    assert result.exit_code == 0, result.output
    assert "No differences" in result.output
    result = runner.invoke(main, ["clients", "create", "shop", "--scope", "members:read"])
    assert result.exit_code == 0, result.output


def test_new_migrations_are_written_in_a_checkout_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert migrator.in_checkout()  # the tests run from the checkout (an editable install)
    monkeypatch.setattr(migrator, "in_checkout", lambda: False)  # as from an installed wheel
    monkeypatch.setenv("LOYALTY_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    before = sorted((migrator.migrations_dir() / "versions").iterdir())
    result = CliRunner().invoke(main, ["db", "revision", "-m", "probe"])
    assert result.exit_code == 1
    assert "write new migrations in a source checkout" in result.output
    assert sorted((migrator.migrations_dir() / "versions").iterdir()) == before


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_channels_keep_every_order_id_meaning_what_it_did(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Existing clients join the default channel; where two clients reported one order id,
    the later client gets a channel of its own, so both orders stay distinct."""
    from sqlalchemy import text

    url = empty_database(backend, request, tmp_path)
    config = migrator.alembic_config(url)
    migrator.upgrade(config, "0008_ledger_reconciliation")
    engine = create_engine(url)
    now = "2026-01-01 00:00:00+00"
    with engine.begin() as conn:
        for client in ("cli_a", "cli_b", "cli_c"):
            conn.execute(
                text(
                    "INSERT INTO api_clients (id, name, secret_hash, scopes, created_at) "
                    "VALUES (:id, :id, 'x', '[]', :now)"
                ),
                {"id": client, "now": now},
            )
        conn.execute(
            text(
                "INSERT INTO members (id, external_id, status, referral_code, metadata, "
                "enrolled_at, created_at, updated_at, timezone, marketing_consent) "
                "VALUES ('mem_1', 'c1', 'active', 'CODE1', '{}', :now, :now, :now, 'UTC', false)"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO wallets (id, member_id, available, pending, held, debt, "
                "lifetime_earned, created_at, updated_at) "
                "VALUES ('wal_1', 'mem_1', 0, 0, 0, 0, 0, :now, :now)"
            ),
            {"now": now},
        )
        for pk, client, order_id in (
            ("ord_1", "cli_a", "A-1"),
            ("ord_2", "cli_b", "A-1"),
            ("ord_3", "cli_c", "C-1"),
        ):
            conn.execute(
                text(
                    "INSERT INTO orders (id, client_id, order_id, member_id, wallet_id, total, "
                    "currency, items, placed_at, points, points_reversed, amount_refunded, "
                    "activates_at, breakdown, request_hash, response, created_at) VALUES "
                    "(:pk, :client, :order_id, 'mem_1', 'wal_1', 0, 'USD', '[]', :now, 0, 0, "
                    "0, :now, '[]', 'h', '{}', :now)"
                ),
                {"pk": pk, "client": client, "order_id": order_id, "now": now},
            )
    migrator.upgrade(config)
    migrator.check(config)
    with engine.connect() as conn:
        clients = dict(conn.execute(text("SELECT id, channel_id FROM api_clients")).all())
        orders = dict(conn.execute(text("SELECT id, channel_id FROM orders")).all())
        channels = dict(conn.execute(text("SELECT id, name FROM channels")).all())
    engine.dispose()
    assert clients == {"cli_a": "chn_default", "cli_b": "chn_cli_b", "cli_c": "chn_default"}
    assert orders == {"ord_1": "chn_default", "ord_2": "chn_cli_b", "ord_3": "chn_default"}
    assert channels == {"chn_default": "Default", "chn_cli_b": "cli_b (cli_b)"}
    migrator.downgrade(config, "0008_ledger_reconciliation")


def test_the_orders_index_built_beforehand_concurrently_is_taken_as_it_is(
    empty_postgresql: str,
) -> None:
    """README's way to upgrade a large database to 0017 without blocking orders: the index
    built first with CREATE INDEX CONCURRENTLY, then the upgrade."""
    config = migrator.alembic_config(empty_postgresql)
    migrator.upgrade(config, "0016_order_facts")
    engine = create_engine(empty_postgresql, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_orders_member_id_placed_at"
                " ON orders (member_id, placed_at)"
            )
    finally:
        engine.dispose()
    migrator.upgrade(config)
    migrator.check(config)


def _orders_indexes(url: str) -> dict[str, bool]:
    """The indexes of ``orders`` that lead with the member's id, and whether each is valid
    (usable by queries)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT c.relname, i.indisvalid FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid"
                " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
                " WHERE i.indrelid = 'orders'::regclass AND a.attname = 'member_id'"
            ).all()
    finally:
        engine.dispose()
    return {name: valid for name, valid in rows}


def test_an_orders_index_left_invalid_by_a_failed_concurrent_build_is_built_again(
    empty_postgresql: str,
) -> None:
    """README's CREATE INDEX CONCURRENTLY, interrupted (here by its lock_timeout while a
    transaction writes orders), leaves an invalid index of that name, which its IF NOT
    EXISTS then keeps: the upgrade builds it again before it drops the member's index."""
    config = migrator.alembic_config(empty_postgresql)
    migrator.upgrade(config, "0016_order_facts")
    engine = create_engine(empty_postgresql, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as writer, engine.connect() as builder:
            writer.exec_driver_sql("BEGIN")
            writer.exec_driver_sql("LOCK TABLE orders IN ROW EXCLUSIVE MODE")  # an order's write
            builder.exec_driver_sql("SET lock_timeout = '200ms'")
            with pytest.raises(OperationalError, match="lock timeout"):
                builder.exec_driver_sql(
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_orders_member_id_placed_at"
                    " ON orders (member_id, placed_at)"
                )
            writer.exec_driver_sql("ROLLBACK")
    finally:
        engine.dispose()
    assert _orders_indexes(empty_postgresql) == {
        "ix_orders_member_id": True,
        "ix_orders_member_id_placed_at": False,
    }
    migrator.upgrade(config)
    assert _orders_indexes(empty_postgresql) == {"ix_orders_member_id_placed_at": True}


def test_tables_have_the_storage_parameters_their_models_give(engine: Engine) -> None:
    """`alembic check` does not compare storage parameters (`postgresql_with`, such as the
    lots' fillfactor): the migrations must set what the models say."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's storage parameters")
    expected = {
        table.name: sorted(
            f"{k}={v}" for k, v in table.dialect_options["postgresql"]["with"].items()
        )
        for table in Base.metadata.sorted_tables
        if table.dialect_options["postgresql"]["with"]
    }
    assert expected  # at least the lots'
    with engine.connect() as conn:
        found = {
            name: sorted(options or [])
            for name, options in conn.execute(
                text(
                    "SELECT relname, reloptions FROM pg_class WHERE relkind = 'r'"
                    " AND relnamespace = current_schema()::regnamespace"
                )
            )
            if name in expected or options
        }
    assert found == expected
