"""The order facts the worker keeps (`service.refresh_order_facts`): repurchase and lifetime
value read from them give exactly the figures of the source tables, before the first build,
after it, with orders since the last refresh, after a refund that removes a member's first order
and an order back-filled before a member's first, and on a re-run; on PostgreSQL and on
SQLite."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from loyalty.analytics import service
from loyalty.analytics.models import OrderFacts, OrderFactsState
from loyalty.clock import FrozenClock, use_clock
from loyalty.db import get_database
from loyalty.ledger import service as ledger
from tests.analytics.conftest import NOW, at, build, enrol, order

FROM_2024 = dt.date(2024, 1, 1)
FROM_2026 = dt.date(2026, 1, 1)


def figures(session: Session) -> list[Any]:
    return [
        service.repurchase(session, first=FROM_2026),
        service.repurchase(session, first=FROM_2024),
        service.repurchase(session, first=FROM_2026, currency="EUR"),
        service.repurchase(session),
        service.lifetime_value(session, first=FROM_2026),
        service.lifetime_value(session, first=FROM_2024),
        service.lifetime_value(session, first=FROM_2024, currency="EUR"),
        # A period that ends before the facts' `through`: from the orders.
        service.lifetime_value(session, first=FROM_2024, last=dt.date(2026, 3, 31)),
        service.repurchase(session, first=FROM_2024, last=dt.date(2026, 3, 31)),
    ]


def live(session: Session) -> list[Any]:
    """The figures from the source tables: as if the facts had never been built."""
    session.execute(delete(OrderFactsState))
    try:
        return figures(session)
    finally:
        session.rollback()


def rows(session: Session) -> dict[str, tuple[Any, ...]]:
    return {
        row.member_id: (row.first_at, row.second_at, row.orders, row.revenue)
        for row in session.scalars(select(OrderFacts))
    }


def test_kept_order_facts_match_the_source_tables(e2e_app: Flask) -> None:
    clock = FrozenClock(NOW)
    use_clock(e2e_app, clock)
    try:
        with e2e_app.app_context():
            session = get_database(e2e_app).sessionmaker()
            try:
                data = build(session)
                f = enrol(session, "cust-f", NOW - dt.timedelta(days=1))
                order(session, f, "F-1", 400, NOW - dt.timedelta(hours=12))
                before = figures(session)  # not built yet: from the source tables
                assert session.get(OrderFactsState, 1) is None
                assert service.refresh_order_facts(session) == {"order facts rebuilt": 1}
                # A, C, D, E, F; B's only order was refunded in full: no row.
                assert rows(session) == {
                    f: (NOW - dt.timedelta(hours=12), None, 1, 400),
                    data.a: (at(2026, 1, 11), at(2026, 1, 15), 4, 10000),
                    data.c: (at(2026, 2, 1, 1), at(2026, 2, 2, 16), 2, 11000),
                    data.d: (at(2025, 2, 28), None, 1, 1000),
                    data.e: (at(2026, 6, 4), None, 1, 2000),
                }
                assert figures(session) == before

                # The next day: rows recorded within the margin before the last refresh (the
                # whole dataset, B's refunded order too) are looked at again.
                clock.advance(dt.timedelta(days=1))
                assert service.refresh_order_facts(session) == {"order facts members recomputed": 6}
                assert figures(session) == live(session)

                # An hour later, before the worker: orders since the refresh come from the
                # orders. E orders again (a second order 12 days after the first), F too (37
                # hours after the first), B buys for the first time (no row yet) and again 30
                # minutes later.
                clock.advance(dt.timedelta(hours=1))
                order(session, f, "F-2", 100, clock.now() - dt.timedelta(minutes=30))
                order(session, data.e, "E-2", 500, clock.now() - dt.timedelta(minutes=50))
                order(session, data.b, "B-2", 800, clock.now() - dt.timedelta(minutes=40))
                order(session, data.b, "B-3", 900, clock.now() - dt.timedelta(minutes=10))
                tail = figures(session)
                assert tail == live(session)
                assert tail[0]["buyers"] == 5  # A, C, E, F and B
                assert tail[0]["repurchase_72_hours"]["first_buyers"] == 5
                assert tail[0]["repurchase_72_hours"]["repurchased"] == 1  # C; F is not 72h old
                assert tail[4]["revenue"] == 24000 + 400 + 100 + 500 + 800 + 900
                # Two days later, still before the worker: F's first order is 72 hours old, and
                # its second (from the orders) came within them; B's is not yet.
                clock.advance(dt.timedelta(days=2))
                later = figures(session)
                assert later == live(session)
                assert later[0]["repurchase_72_hours"]["eligible"] == 4
                assert later[0]["repurchase_72_hours"]["repurchased"] == 2  # C and F

                # Late: A's first order is refunded in full (A's first becomes A-2), C's order
                # of 20 January is back-filled (before C's first). The facts lag until the
                # worker ran. A also orders now: recomputed in full, counted once.
                ledger.refund_order(session, order_id="A-1", refund_id="A-1-R", amount=1000)
                order(session, data.c, "C-0", 300, at(2026, 1, 20))
                order(session, data.a, "A-5", 600, clock.now() - dt.timedelta(minutes=5))
                expected = live(session)
                assert figures(session) != expected
                clock.advance(dt.timedelta(hours=1))
                counts = service.refresh_order_facts(session)
                assert counts == {"order facts members recomputed": 2}  # A and C
                assert figures(session) == live(session) == expected
                kept = rows(session)
                assert kept[data.a] == (at(2026, 1, 15), at(2026, 2, 5), 4, 9600)
                assert kept[data.c] == (at(2026, 1, 20), at(2026, 2, 1, 1), 3, 11300)
                assert kept[data.b][2:] == (2, 1700)
                assert kept[data.e] == (at(2026, 6, 4), at(2026, 6, 16, 12, 10), 2, 2500)
                assert kept[f] == (NOW - dt.timedelta(hours=12), at(2026, 6, 16, 12, 30), 2, 500)

                # A re-run changes nothing, also later the same day.
                service.refresh_order_facts(session)
                assert rows(session) == kept
                clock.advance(dt.timedelta(hours=3))
                service.refresh_order_facts(session)
                assert rows(session) == kept
                assert figures(session) == live(session)
            finally:
                session.close()
    finally:
        use_clock(e2e_app, None)


def test_a_clock_behind_the_facts_reads_the_source_tables(session: Session, app: Flask) -> None:
    clock = FrozenClock(NOW)
    use_clock(app, clock)
    try:
        build(session)
        service.refresh_order_facts(session)
        clock.set(NOW - dt.timedelta(days=40))
        assert figures(session) == live(session)
        assert service.refresh_order_facts(session) == {"order facts rebuilt": 1}
        assert figures(session) == live(session)
    finally:
        use_clock(app, None)


def test_a_new_analytics_currency_rebuilds_the_facts(session: Session, app: Flask) -> None:
    clock = FrozenClock(NOW)
    use_clock(app, clock)
    try:
        data = build(session)
        order(session, data.a, "A-EUR", 9000, at(2026, 3, 1), currency="EUR")
        service.refresh_order_facts(session)
        service.update_settings(session, changes={"currency": "EUR"}, actor="test")
        # The facts hold dollars: euros are read from the orders until the worker ran.
        assert figures(session) == live(session)
        assert service.lifetime_value(session, first=FROM_2026)["revenue"] == 9000
        assert service.refresh_order_facts(session) == {"order facts rebuilt": 1}
        assert rows(session)[data.a][2:] == (5, 9000)
        assert figures(session) == live(session)
    finally:
        use_clock(app, None)
