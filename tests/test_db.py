"""The database layer: units of work, SQLite's safety settings, UTC timestamps, constraint names."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session
from ulid import ULID

from loyalty import create_app, migrator
from loyalty.db import (
    among,
    constraint_name,
    get_database,
    make_engine,
    new_id,
    retrying,
    unit_of_work,
)
from loyalty.members import service
from loyalty.members.models import Member
from tests.conftest import base_config


def test_unit_of_work_commits_on_success_and_rolls_back_on_error(session: Session) -> None:
    with unit_of_work(session):
        session.add(Member(id="mem_a", external_id="a", referral_code="AAAAAAAA", timezone="UTC"))
    with pytest.raises(RuntimeError), unit_of_work(session):
        session.add(Member(id="mem_b", external_id="b", referral_code="BBBBBBBB", timezone="UTC"))
        session.flush()
        raise RuntimeError("boom")
    assert session.scalars(select(Member.id)).all() == ["mem_a"]


def test_unit_of_work_refuses_to_swallow_pending_changes(session: Session) -> None:
    session.add(Member(id="mem_a", external_id="a", referral_code="AAAAAAAA", timezone="UTC"))
    with pytest.raises(RuntimeError, match="uncommitted changes"), unit_of_work(session):
        pass


def test_constraint_names_on_postgresql(session: Session) -> None:
    service.enroll_member(session, external_id="dup")
    with pytest.raises(IntegrityError) as caught:
        with session.begin_nested():
            session.add(Member(id="mem_x", external_id="dup", referral_code="CCCCCCCC"))
    assert constraint_name(caught.value) == "uq_members_external_id"
    session.rollback()


def test_sqlite_is_configured_for_concurrent_use(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 10_000
    engine.dispose()


def test_utc_timestamps_round_trip_on_sqlite(sqlite_app: Flask) -> None:
    with sqlite_app.app_context():
        session = get_database(sqlite_app).sessionmaker()
        paris = dt.timezone(dt.timedelta(hours=1))
        member, _ = service.enroll_member(
            session, external_id="t", enrolled_at=dt.datetime(2024, 1, 31, 9, 30, tzinfo=paris)
        )
        session.expire_all()
        loaded = session.get(Member, member.id)
        assert loaded is not None
        assert loaded.enrolled_at == dt.datetime(2024, 1, 31, 8, 30, tzinfo=dt.UTC)
        assert loaded.enrolled_at.tzinfo is not None
        with pytest.raises(IntegrityError) as caught:
            with session.begin_nested():
                session.add(Member(id="mem_x", external_id="t", referral_code="CCCCCCCC"))
        assert constraint_name(caught.value) == "uq_members_external_id"
        session.close()


def _members_among(session: Session) -> list[list[str]]:
    with unit_of_work(session):
        for name in ("a", "b", "c"):
            session.add(
                Member(id=f"mem_{name}", external_id=name, referral_code=name * 8, timezone="UTC")
            )
    asked: list[Any] = [["mem_a", "mem_c", "mem_x"], {"mem_b"}, [], ("mem_c",) * 3]
    return [
        session.scalars(
            select(Member.id).where(among(session, Member.id, values)).order_by(Member.id)
        ).all()
        for values in asked
    ]


def test_among_is_in_on_both_databases(session: Session, sqlite_app: Flask) -> None:
    # One array parameter on PostgreSQL, an IN list on SQLite: the same rows.
    expected = [["mem_a", "mem_c"], ["mem_b"], [], ["mem_c"]]
    assert _members_among(session) == expected
    clause = among(session, Member.id, ["mem_a", "mem_b"]).compile(
        dialect=session.get_bind().dialect
    )
    assert "ANY" in str(clause) and len(clause.params) == 1
    with sqlite_app.app_context():
        assert _members_among(get_database(sqlite_app).sessionmaker()) == expected


def test_naive_timestamps_are_refused(session: Session) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        service.enroll_member(session, external_id="n", enrolled_at=dt.datetime(2024, 1, 1))


def test_sqlite_serialises_concurrent_writers(tmp_path: Path) -> None:
    """Threads enrolling the same customers at once on one SQLite file: no lost or doubled
    member, no 'database is locked'."""
    path = tmp_path / "shared.db"
    migrator.upgrade(migrator.alembic_config(f"sqlite:///{path}"))
    app = create_app(base_config(f"sqlite:///{path}"))
    workers, customers = 6, 10
    barrier = threading.Barrier(workers)

    def enroll_all(_: int) -> int:
        created = 0
        with app.app_context():
            session = get_database(app).sessionmaker()
            barrier.wait()
            for i in range(customers):
                created += service.enroll_member(session, external_id=f"c{i}")[1]
            session.close()
        return created

    with ThreadPoolExecutor(workers) as pool:
        created = sum(pool.map(enroll_all, range(workers)))
    with app.app_context():
        session = get_database(app).sessionmaker()
        count = session.scalar(select(func.count()).select_from(Member))
        session.close()
    get_database(app).engine.dispose()
    assert created == customers
    assert count == customers


@pytest.mark.concurrency
def test_deadlocked_transactions_are_retried_whole(app: Flask) -> None:
    """Two transactions locking two rows in opposite orders deadlock on PostgreSQL; the loser
    is run again and both succeed."""
    from loyalty.db import retrying

    with app.app_context():
        session = get_database(app).sessionmaker()
        first = service.enroll_member(session, external_id="d1")[0].id
        second = service.enroll_member(session, external_id="d2")[0].id
        session.close()
    barrier = threading.Barrier(2)
    attempts: list[str] = []

    @retrying
    def lock_both(session: Session, *, order: tuple[str, str]) -> None:
        attempts.append(order[0])
        with unit_of_work(session):
            session.get(Member, order[0], with_for_update=True)
            if len(attempts) <= 2:
                barrier.wait(timeout=10)
            session.get(Member, order[1], with_for_update=True)

    def run(order: tuple[str, str]) -> None:
        with app.app_context():
            session = get_database(app).sessionmaker()
            try:
                lock_both(session, order=order)
            finally:
                session.close()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(run, [(first, second), (second, first)]))
    assert len(attempts) == 3  # one of the two ran twice


def test_a_connection_the_server_dropped_is_replaced_and_the_work_retried(
    database_url: str,
) -> None:
    """Pooled connections are not pinged before use (that is a round trip per request): a
    connection PostgreSQL dropped fails its first statement, the pool replaces it, and a
    `retrying` service function runs again on a fresh one."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as first:
            dropped = first.execute(select(func.pg_backend_pid())).scalar_one()
        with engine.connect() as other:  # the pool's one connection is back in the pool
            assert other.execute(select(func.pg_backend_pid())).scalar_one() == dropped
        admin = make_engine(database_url, pool_size=1)
        with admin.connect() as connection:
            # waits (up to 5 s) until the backend has gone
            assert connection.execute(select(func.pg_terminate_backend(dropped, 5000))).scalar()
        admin.dispose()

        attempts: list[int] = []

        @retrying
        def backend(session: Session) -> int:
            attempts.append(1)
            with unit_of_work(session):
                return int(session.scalar(select(func.pg_backend_pid())) or 0)

        with Session(engine) as session:
            assert backend(session) != dropped
        assert len(attempts) == 2
    finally:
        engine.dispose()


def test_new_ids_are_ulids_in_creation_order() -> None:
    """What python-ulid makes: the prefix, then 26 digits of Crockford's base32 that read back
    as the same ULID, stamped with the moment they were made, and in the order they were made
    (within a millisecond too)."""
    before = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    ids = [new_id("evt") for _ in range(5000)]
    after = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for made in ids:
        prefix, _, text_form = made.partition("_")
        ulid = ULID.from_str(text_form)
        assert prefix == "evt" and len(text_form) == 26 and str(ulid) == text_form
        assert before - 1 <= ulid.milliseconds <= after + 1
    # Within one millisecond, each is the previous one plus one.
    values = [int(ULID.from_str(made[4:])) for made in ids]
    same = [(a, b) for a, b in zip(values, values[1:], strict=False) if a >> 80 == b >> 80]
    assert same and all(b == a + 1 for a, b in same)
