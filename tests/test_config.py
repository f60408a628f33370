"""Configuration order and start-up failures."""

from __future__ import annotations

import gc
import importlib
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from loyalty import create_app
from loyalty.cli import main
from loyalty.config import INSECURE_SECRET_KEY, ConfigError

GOOD_SECRET = "k" * 40


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "LOYALTY_SECRET_KEY",
        "LOYALTY_DATABASE_URL",
        "LOYALTY_TOKEN_TTL",
        "LOYALTY_DEBUG",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOYALTY_INSTANCE_PATH", str(tmp_path / "instance"))


def test_missing_secret_stops_start_up_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="LOYALTY_SECRET_KEY"):
        create_app()


def test_built_in_secret_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOYALTY_SECRET_KEY", INSECURE_SECRET_KEY)
    with pytest.raises(ConfigError, match="LOYALTY_SECRET_KEY is not set"):
        create_app()


def test_short_secret_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOYALTY_SECRET_KEY", "short")
    with pytest.raises(ConfigError, match="too short"):
        create_app()


def test_debug_and_testing_run_without_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    assert create_app({"TESTING": True}).testing
    monkeypatch.setenv("LOYALTY_DEBUG", "true")
    assert create_app().debug


def test_defaults_then_environment_then_explicit_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOYALTY_SECRET_KEY", GOOD_SECRET)
    assert create_app().config["TOKEN_TTL"] == 900
    monkeypatch.setenv("LOYALTY_TOKEN_TTL", "60")
    assert create_app().config["TOKEN_TTL"] == 60
    assert create_app({"TOKEN_TTL": 5}).config["TOKEN_TTL"] == 5


def test_database_defaults_to_sqlite_in_the_instance_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOYALTY_SECRET_KEY", GOOD_SECRET)
    url = create_app().config["DATABASE_URL"]
    assert url == f"sqlite:///{tmp_path / 'instance' / 'loyalty.db'}"


@pytest.mark.parametrize(
    "given", ["postgres://u@h/db", "postgresql://u@h/db", "postgresql+psycopg2://u@h/db"]
)
def test_postgresql_urls_use_psycopg_3(given: str) -> None:
    app = create_app({"TESTING": True, "DATABASE_URL": given})
    assert app.config["DATABASE_URL"] == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("DATABASE_URL", "mysql://u@h/db", "LOYALTY_DATABASE_URL"),
        ("TOKEN_TTL", "soon", "LOYALTY_TOKEN_TTL"),
        ("TOKEN_TTL", 0, "LOYALTY_TOKEN_TTL"),
        ("MAX_CONTENT_LENGTH", -1, "LOYALTY_MAX_CONTENT_LENGTH"),
        ("ARGON2_PROFILE", "FAST", "LOYALTY_ARGON2_PROFILE"),
        ("AUTH_CACHE_SECONDS", -1, "LOYALTY_AUTH_CACHE_SECONDS"),
        ("AUTH_CACHE_SECONDS", 3600, "LOYALTY_AUTH_CACHE_SECONDS"),
        ("AUTH_CACHE_SECONDS", "soon", "LOYALTY_AUTH_CACHE_SECONDS"),
        ("DATABASE_PRE_PING", "maybe", "LOYALTY_DATABASE_PRE_PING"),
    ],
)
def test_unusable_settings_are_named(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_app({"TESTING": True, key: value})


def test_loyalty_run_refuses_to_serve_without_a_secret() -> None:
    result = CliRunner().invoke(main, ["run", "--port", "1"])
    assert result.exit_code == 1
    assert "LOYALTY_SECRET_KEY is not set" in result.output


def test_loyalty_serve_refuses_to_serve_without_a_secret() -> None:
    result = CliRunner().invoke(main, ["serve", "--port", "1"])
    assert result.exit_code == 1
    assert "LOYALTY_SECRET_KEY" in result.output


def test_loyalty_serve_wants_a_connection_for_each_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOYALTY_SECRET_KEY", "k" * 48)
    monkeypatch.setenv("LOYALTY_DATABASE_POOL_SIZE", "2")
    result = CliRunner().invoke(main, ["serve", "--port", "1", "--threads", "4"])
    assert result.exit_code == 1
    assert "LOYALTY_DATABASE_POOL_SIZE of at least 4" in result.output


def test_wsgi_entry_point_refuses_to_start_without_a_secret() -> None:
    sys.modules.pop("wsgi", None)
    with pytest.raises(ConfigError, match="LOYALTY_SECRET_KEY"):
        importlib.import_module("wsgi")


@pytest.mark.parametrize("entry_point", ["wsgi", "loyalty.wsgi"])
def test_wsgi_entry_point_builds_the_app(monkeypatch: pytest.MonkeyPatch, entry_point: str) -> None:
    """... and keeps what it built out of the garbage collector's full collections."""
    monkeypatch.setenv("LOYALTY_SECRET_KEY", GOOD_SECRET)
    sys.modules.pop(entry_point, None)
    gc.unfreeze()
    try:
        module = importlib.import_module(entry_point)
        assert module.app.name == "loyalty"
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
        sys.modules.pop(entry_point, None)


def test_numeric_secret_from_the_environment_stays_a_string(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOYALTY_SECRET_KEY", "1" * 40)
    assert create_app().config["SECRET_KEY"] == "1" * 40
