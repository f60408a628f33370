"""Rules of the codebase that a reader relies on."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "loyalty"


def test_only_db_py_commits() -> None:
    migrations = PACKAGE / "migrations"  # Alembic's env.py commits the connection it opened
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "db.py"
        and not path.is_relative_to(migrations)
        and re.search(r"\.commit\(", path.read_text())
    ]
    assert offenders == []


def test_rules_modules_touch_no_database_and_no_flask() -> None:
    for path in PACKAGE.rglob("rules.py"):
        text = path.read_text()
        assert "sqlalchemy" not in text and "flask" not in text, path
