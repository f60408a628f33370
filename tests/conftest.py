"""Test harness: one PostgreSQL database per xdist worker, built by the real migrations, and
each test inside a transaction that is rolled back (savepoint sessions). Tests marked
``concurrency`` get real commits instead and the tables are emptied after them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pytest_postgresql.janitor import DatabaseJanitor
from sqlalchemy import Engine, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from loyalty import create_app, migrator
from loyalty.auth import service as auth_service
from loyalty.auth.rules import SCOPES
from loyalty.db import Base, get_database, make_engine
from tests.support import new_session  # sessions on their own connections, for every area

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TEST_SECRET_KEY = "test-secret-key-that-is-long-enough-for-hs256-0123456789"


def base_config(database_url: str) -> dict[str, Any]:
    return {
        "TESTING": True,
        "SECRET_KEY": TEST_SECRET_KEY,
        "DATABASE_URL": database_url,
        "ARGON2_PROFILE": "CHEAPEST",
        # Webhook receivers in tests listen on loopback (tests/events sets it back to check
        # the refusals).
        "WEBHOOKS_ALLOW_PRIVATE": True,
    }


@pytest.fixture(scope="session")
def database_url(worker_id: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this worker, migrated to head; dropped afterwards."""
    server = make_url(os.environ.get("LOYALTY_TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)).set(
        drivername="postgresql+psycopg"
    )
    name = f"loyalty_test_{worker_id}_{os.getpid()}"
    janitor = DatabaseJanitor(
        user=server.username or "postgres",
        password=server.password,
        host=server.host or "127.0.0.1",
        port=server.port or 5432,
        dbname=name,
        maintenance_dbname=server.database or "postgres",
    )
    janitor.drop()
    janitor.init()
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        migrator.upgrade(migrator.alembic_config(url))
        _snapshot_seeds(url)
        yield url
    finally:
        janitor.drop()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def base_app(database_url: str) -> Iterator[Flask]:
    """One app for the whole session; each test rebinds its sessions (see `app`)."""
    app = create_app(base_config(database_url))
    yield app
    get_database(app).engine.dispose()


@pytest.fixture
def connection(engine: Engine, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The test's connection, in a transaction rolled back at the end.

    Concurrency tests get no connection here: they commit for real, and the tables are
    emptied after them.
    """
    if request.node.get_closest_marker("concurrency"):
        yield None
        _truncate_all(engine)
        return
    with engine.connect() as conn:
        outer = conn.begin()
        yield conn
        outer.rollback()


@pytest.fixture
def app(base_app: Flask, connection: Any, engine: Engine) -> Iterator[Flask]:
    """The app, with every request's session joined to the test's transaction."""
    database = get_database(base_app)
    original = database.sessionmaker
    if connection is not None:
        database.sessionmaker = sessionmaker(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
    try:
        yield base_app
    finally:
        database.sessionmaker = original


@pytest.fixture
def session(app: Flask) -> Iterator[Session]:
    """A session for service tests and factories, inside an app context."""
    with app.app_context():
        session = get_database(app).sessionmaker()
        yield session
        session.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_headers(app: Flask) -> Callable[..., dict[str, str]]:
    """Bearer headers for a new API client with the given scopes (default: all)."""

    def make(*scopes: str) -> dict[str, str]:
        return bearer_headers(app, scopes or SCOPES)

    return make


def bearer_headers(app: Flask, scopes: tuple[str, ...] | list[str]) -> dict[str, str]:
    with app.app_context():
        session = get_database(app).sessionmaker()
        try:
            new = auth_service.create_client(session, name="test client", scopes=scopes)
            grant = auth_service.issue_token(
                session, client_id=new.client.id, client_secret=new.secret
            )
        finally:
            session.close()
    return {"Authorization": f"Bearer {grant.access_token}"}


@pytest.fixture
def headers(make_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    """Bearer headers carrying every scope."""
    return make_headers()


# Rows the migrations create, kept when the tables are emptied after a concurrency test.
SEEDED_TABLES = (
    "channels",
    "program_settings",
    "earning_settings",
    "tier_settings",
    "referral_settings",
    "community_settings",
    "lifecycle_settings",
    "config_version",
    "analytics_settings",
)


def _seeded(conn: Any) -> list[str]:
    names = conn.execute(
        text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'test_seeds'")
    ).scalars()
    return [name for name in names if name in SEEDED_TABLES]


def _truncate_all(engine: Engine) -> None:
    """Empty every table but restore the migrations' seed rows as they were."""
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables if t.name not in SEEDED_TABLES)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))
        for name in _seeded(conn):
            conn.execute(text(f"DELETE FROM {name}"))
            conn.execute(text(f"INSERT INTO {name} SELECT * FROM test_seeds.{name}"))


def _snapshot_seeds(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA test_seeds"))  # out of Alembic's sight
        existing = set(
            conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                )
            ).scalars()
        )
        for name in SEEDED_TABLES:
            if name not in existing:
                continue
            conn.execute(text(f"CREATE TABLE test_seeds.{name} AS SELECT * FROM {name}"))
    engine.dispose()


# --- SQLite -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session; tests work on copies of it."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    migrator.upgrade(migrator.alembic_config(f"sqlite:///{path}"))
    return path


@pytest.fixture
def sqlite_app(sqlite_template: Path, tmp_path: Path) -> Iterator[Flask]:
    path = tmp_path / "loyalty.db"
    shutil.copy(sqlite_template, path)
    app = create_app(base_config(f"sqlite:///{path}"))
    yield app
    get_database(app).engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def e2e_app(request: pytest.FixtureRequest) -> Flask:
    """The app on each backend, for the end-to-end scenarios."""
    fixture = "app" if request.param == "postgresql" else "sqlite_app"
    result: Flask = request.getfixturevalue(fixture)
    return result
