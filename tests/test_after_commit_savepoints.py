"""`loyalty.db`'s savepoint bookkeeping: `after_commit` work queued in
savepoints (bare ones, units of work inside a request transaction, nested in each other)
runs once the request commits unless a savepoint it was queued in rolled back."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from loyalty.db import after_commit, get_database, request_transaction, unit_of_work


@pytest.fixture(params=["postgresql", "sqlite"])
def any_session(request: pytest.FixtureRequest) -> Iterator[Session]:
    app: Flask = request.getfixturevalue("app" if request.param == "postgresql" else "sqlite_app")
    with app.app_context():
        session = get_database(app).sessionmaker()
        yield session
        session.close()


def _queue(session: Session, ran: list[str], name: str) -> None:
    after_commit(session, lambda _s: ran.append(name))


def _inner_released_outer_rolled_back(session: Session, ran: list[str]) -> None:
    _queue(session, ran, "root")
    outer = session.begin_nested()
    _queue(session, ran, "outer")
    with unit_of_work(session):
        _queue(session, ran, "unit")
    outer.rollback()
    _queue(session, ran, "after")


def _inner_rolled_back_outer_released(session: Session, ran: list[str]) -> None:
    with unit_of_work(session):
        _queue(session, ran, "unit")
        inner = session.begin_nested()
        _queue(session, ran, "inner")
        inner.rollback()
        _queue(session, ran, "unit-after")


def _siblings(session: Session, ran: list[str]) -> None:
    with unit_of_work(session):
        _queue(session, ran, "first")
    with pytest.raises(LookupError), unit_of_work(session):
        _queue(session, ran, "second")
        raise LookupError
    with unit_of_work(session):
        _queue(session, ran, "third")


def _rolled_back_then_reused(session: Session, ran: list[str]) -> None:
    for index in range(3):
        savepoint = session.begin_nested()
        _queue(session, ran, f"gone-{index}")
        savepoint.rollback()
        with session.begin_nested():
            _queue(session, ran, f"kept-{index}")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_inner_released_outer_rolled_back, ["root", "after"]),
        (_inner_rolled_back_outer_released, ["unit", "unit-after"]),
        (_siblings, ["first", "third"]),
        (_rolled_back_then_reused, ["kept-0", "kept-1", "kept-2"]),
    ],
)
def test_work_queued_in_savepoints_runs_unless_its_savepoint_rolled_back(
    any_session: Session, body: Callable[[Session, list[str]], None], expected: list[str]
) -> None:
    session = any_session
    for _request in range(2):  # the same session, request after request
        ran: list[str] = []
        with request_transaction(session):
            body(session, ran)
        assert ran == expected
