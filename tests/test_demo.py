"""`loyalty demo --reset` starts the demo over; the demo never prints a database password.
(The demo itself, served and toured twice, is tests/e2e/test_readme.py.)"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from loyalty.cli import main


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("LOYALTY_DATABASE_URL", "LOYALTY_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOYALTY_INSTANCE_PATH", str(tmp_path))
    return tmp_path


def test_reset_deletes_the_demo_database_and_seeds_it_again(instance: Path) -> None:
    database = instance / "loyalty.db"
    with sqlite3.connect(database) as connection:  # what an earlier run left behind
        connection.execute("CREATE TABLE left_behind (id INTEGER)")
    (instance / "loyalty.db-wal").write_bytes(b"")
    (instance / "demo-client.json").write_text(json.dumps({"client_id": "cli_gone"}))

    result = CliRunner().invoke(main, ["demo", "--no-serve", "--reset"])

    assert result.exit_code == 0, result.output
    assert f"Removed {database}\n" in result.output
    assert f"Removed {database}-wal\n" in result.output
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        members = connection.execute("SELECT count(*) FROM members").fetchone()[0]
        (client_id,) = connection.execute("SELECT id FROM api_clients").fetchone()
    assert "left_behind" not in tables and members == 7
    assert f"export CLIENT_ID={client_id}\n" in result.output
    assert json.loads((instance / "demo-client.json").read_text())["client_id"] == client_id


def test_reset_refuses_a_database_server_and_hides_its_password(
    instance: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOYALTY_DATABASE_URL", "postgresql://shop:s3cret-pw@db.invalid/loyalty")

    result = CliRunner().invoke(main, ["demo", "--no-serve", "--reset"])

    assert result.exit_code == 1
    assert "--reset only removes a SQLite demo database" in result.output
    assert "postgresql+psycopg://shop:***@db.invalid/loyalty" in result.output
    assert "s3cret-pw" not in result.output
