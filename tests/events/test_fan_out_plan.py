"""The fan-out's read of the next events keeps to the partial index's order however little
the statistics know about the backlog: a bitmap scan and a sort would read every waiting
event for each batch (a job's hundreds of thousands, over and over)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

from loyalty.events import delivery

WAITING = 5000  # far more than a batch, far more than statistics of an empty table expect


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


@pytest.mark.usefixtures("clock")
def test_the_next_events_are_read_in_index_order_without_reading_the_backlog(
    session: Session, engine: Engine
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner")
    session.execute(
        text(
            "INSERT INTO outbox_events (id, type, version, occurred_at, member_id, data,"
            " created_at) SELECT 'evt_plan' || n, 'points.accrued', 1, now(), NULL, '{}',"
            " now() FROM generate_series(1, :count) AS n"
        ),
        {"count": WAITING},
    )
    plans: list[dict[str, Any]] = []

    def explain(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "dispatched_at IS NULL" in statement:
            # The batch's statement writes too: its plan is taken in a savepoint rolled back.
            cursor.execute("SAVEPOINT explained")
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
            [[found]] = cursor.fetchall()
            cursor.execute("ROLLBACK TO SAVEPOINT explained")
            plan = (json.loads(found) if isinstance(found, str) else found)[0]["Plan"]
            plans.append(
                next(
                    (node for node in _nodes(plan) if node.get("Subplan Name") == "CTE batch"),
                    plan,
                )
            )

    event.listen(engine, "before_cursor_execute", explain)
    try:
        assert delivery.fan_out(session, batch_size=100) == 100
    finally:
        event.remove(engine, "before_cursor_execute", explain)

    [plan] = plans
    nodes = list(_nodes(plan))
    assert {node["Node Type"] for node in nodes} == {"Limit", "Index Scan"}, plan
    [scan] = [node for node in nodes if node["Node Type"] == "Index Scan"]
    assert scan["Index Name"] == "ix_outbox_events_undispatched"
    assert scan["Actual Rows"] == 100  # read until the batch was full, no further
