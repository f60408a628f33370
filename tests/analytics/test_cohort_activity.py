"""The cohort activity the worker keeps (`service.refresh_cohort_activity`): the cohort reports
read from it give exactly the figures of the source tables, after the first build, after
activity since the last refresh, after late events and refunds of past days, and on a re-run;
on PostgreSQL and on SQLite."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from loyalty.analytics import service
from loyalty.analytics.models import CohortActivity, CohortActivityState
from loyalty.clock import FrozenClock, use_clock
from loyalty.db import get_database
from loyalty.ledger import service as ledger
from tests.analytics.conftest import NOW, at, build, event, order

FROM_2024 = dt.date(2024, 1, 1)
QUERIES: list[dict[str, Any]] = [
    {"first": FROM_2024, "months": 60},
    {"first": FROM_2024, "months": 60, "basis": "first_order"},
    {"first": FROM_2024, "months": 12, "acquisition": "referred"},
    {"first": FROM_2024, "months": 7, "basis": "first_order", "acquisition": "direct"},
    {},
]


def figures(session: Session) -> list[Any]:
    return [service.cohort_retention(session, **query) for query in QUERIES]


def live(session: Session) -> list[Any]:
    """The figures from the source tables: as if the table had never been built."""
    session.execute(delete(CohortActivityState))
    try:
        return figures(session)
    finally:
        session.rollback()


def rows(session: Session) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in session.execute(
            select(
                CohortActivity.member_id,
                CohortActivity.basis,
                CohortActivity.joined_on,
                CohortActivity.marks,
                CohortActivity.months,
            ).order_by(CohortActivity.member_id, CohortActivity.basis)
        )
    ]


def test_kept_cohorts_match_the_source_tables(e2e_app: Flask) -> None:
    clock = FrozenClock(NOW)
    use_clock(e2e_app, clock)
    try:
        with e2e_app.app_context():
            session = get_database(e2e_app).sessionmaker()
            try:
                data = build(session)
                before = figures(session)  # not built yet: from the source tables
                assert session.get(CohortActivityState, 1) is None
                assert service.refresh_cohort_activity(session) == {"cohort activity rebuilt": 1}
                built = rows(session)
                assert len(built) == 9  # 5 members by enrolment, 4 with a counted order
                assert figures(session) == before

                # The next day: rows recorded within the margin before the last refresh
                # (the whole dataset) are looked at again.
                clock.advance(dt.timedelta(days=1))
                assert service.refresh_cohort_activity(session) == {
                    "cohort activity members recomputed": 5
                }
                assert figures(session) == live(session)

                # An hour later, before the worker: activity since the refresh comes from the
                # source tables.
                clock.advance(dt.timedelta(hours=1))
                order(session, data.e, "E-2", 500, clock.now() - dt.timedelta(minutes=10))
                assert figures(session) == live(session)

                # Late: B checks in on their day 5, A's first order is refunded in full, D's
                # order on their day 1 is back-filled. The kept rows lag until the worker ran.
                event(session, data.b, "b-late", "check_in", at(2026, 1, 25))
                ledger.refund_order(session, order_id="A-1", refund_id="A-1-R", amount=1000)
                order(session, data.d, "D-0", 700, at(2024, 3, 1))
                expected = live(session)
                assert figures(session) != expected
                clock.advance(dt.timedelta(hours=1))
                counts = service.refresh_cohort_activity(session)
                assert counts == {"cohort activity members recomputed": 3}  # A, B, D
                assert figures(session) == live(session)
                january = next(c for c in expected[0].cohorts if c.cohort == "2026-01")
                assert january.marks[0]["retained"] == 0  # A's day 1 order is refunded
                assert january.marks[1]["retained"] == 2  # and B's late check-in on day 5
                leap = next(c for c in expected[0].cohorts if c.cohort == "2024-02")
                assert leap.marks[0]["retained"] == 1  # D's back-filled order on day 1

                # A re-run changes nothing, also later the same day.
                again = rows(session)
                service.refresh_cohort_activity(session)
                assert rows(session) == again
                clock.advance(dt.timedelta(hours=3))
                service.refresh_cohort_activity(session)
                assert rows(session) == again
                assert figures(session) == live(session)
            finally:
                session.close()
    finally:
        use_clock(e2e_app, None)


def test_a_clock_behind_the_table_reads_the_source_tables(session: Session, app: Flask) -> None:
    clock = FrozenClock(NOW)
    use_clock(app, clock)
    try:
        build(session)
        service.refresh_cohort_activity(session)
        clock.set(NOW - dt.timedelta(days=40))
        assert figures(session) == live(session)
        assert service.refresh_cohort_activity(session) == {"cohort activity rebuilt": 1}
        assert figures(session) == live(session)
    finally:
        use_clock(app, None)
