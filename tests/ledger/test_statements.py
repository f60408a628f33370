"""What one accrual costs in SQL round trips, counted (not timed): the guard against a change
that quietly adds statements to the hot path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event

# SELECT (token's client, member and wallet locks, settings, order, pricing reads...),
# INSERT/UPDATE of the order, entry, lot and wallet, the outbox row and its NOTIFY.
PLAIN_ACCRUAL = 14


@contextmanager
def counting(engine: Engine) -> Iterator[list[str]]:
    """The statements sent to the database meanwhile, without the test harness's savepoints."""
    seen: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        verb = statement.split(None, 1)[0].upper()
        if verb not in {"SAVEPOINT", "RELEASE", "ROLLBACK"}:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_plain_accrual_costs_a_fixed_number_of_statements(
    app: Flask, client: FlaskClient, engine: Engine, make_headers: Callable[..., dict[str, str]]
) -> None:
    headers = make_headers("points:accrue", "members:write")
    member = client.post("/v1/members", json={"external_id": "sql-1"}, headers=headers).json
    order = {"member_id": member["id"], "total": 1000, "currency": "USD"}
    assert client.post("/v1/orders", json={**order, "order_id": "warm"}, headers=headers)
    with counting(engine) as seen:
        answer = client.post("/v1/orders", json={**order, "order_id": "o-1"}, headers=headers)
    assert answer.status_code == 201, answer.json
    verbs = [statement.split(None, 1)[0].upper() for statement in seen]
    assert len(seen) <= PLAIN_ACCRUAL, "\n".join(seen)
    assert verbs.count("INSERT") == 4  # the order, its entry, its lot, its outbox row
    assert "NOTIFY" in verbs
