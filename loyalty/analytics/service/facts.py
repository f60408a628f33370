"""Order facts (`OrderFacts`): what repurchase and lifetime value need of each member's counted
orders, kept by the worker's daily pass so that those reports read one row per member instead
of grouping every order.

A row holds a member's first counted order time, the first one strictly after it (the
repurchase), how many counted orders and their revenue in the state's currency, net of refunds.
It counts the orders placed before the state's ``through``; reports add the orders since from
the source table (`aggregate` over ``[through, ...)``), so figures are never older than the
last refresh.

`refresh` (the worker, once a day) builds it the first time (and again when the analytics
currency changed), then adds the orders placed since the last ``through`` (each order lands in
exactly one window, so a re-run adds nothing) and recomputes in full the members whose past
changed since the last refresh: orders back-filled before ``through`` and refunds of such
orders (a refund in full removes an order, which can change a member's first). Rows recorded
up to `LATE_MARGIN` before the last refresh are looked at again, for transactions that
committed after it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.analytics.models import OrderFacts, OrderFactsState
from loyalty.analytics.service.settings import get_settings
from loyalty.db import dialect_insert, unit_of_work
from loyalty.ledger import reporting as ledger

# Changes recorded this long before the last refresh are looked at again (late commits).
LATE_MARGIN = dt.timedelta(hours=1)
# Members recomputed in full per statement.
CHUNK = 2000
COLUMNS = ["member_id", "first_at", "second_at", "orders", "revenue"]

Window = Callable[[Any], ColumnElement[bool]]


def state(
    session: Session, now: dt.datetime | None = None, *, currency: str | None = None
) -> OrderFactsState | None:
    """The table's state when reports may read it: built, not ahead of ``now`` and (when
    ``currency`` is given) with revenue in that currency."""
    row = session.get(OrderFactsState, 1)
    if row is None or (now is not None and row.through > now):
        return None
    if currency is not None and row.currency != currency:
        return None
    return row


def aggregate(window: Window, currency: str, name: str = "order_facts_window") -> Any:
    """Per member with a counted order in ``window`` (a condition on a counted-orders
    subquery's columns): ``member_id``, ``first_at``, ``second_at`` (the first order time
    strictly after ``first_at`` in the window, if any), ``orders`` and ``revenue`` (in
    ``currency``, net of refunds). A subquery."""
    orders = ledger.counted_orders().subquery()
    money = orders.c.total - orders.c.amount_refunded
    firsts = (
        select(
            orders.c.member_id,
            func.min(orders.c.placed_at).label("first_at"),
            func.count().label("orders"),
            func.sum(case((orders.c.currency == currency, money), else_=0)).label("revenue"),
        )
        .where(window(orders))
        .group_by(orders.c.member_id)
        .cte(f"{name}_firsts")
    )
    later = ledger.counted_orders().subquery()
    seconds = (
        select(later.c.member_id, func.min(later.c.placed_at).label("second_at"))
        .join(
            firsts,
            and_(firsts.c.member_id == later.c.member_id, later.c.placed_at > firsts.c.first_at),
        )
        .where(window(later))
        .group_by(later.c.member_id)
        .subquery(f"{name}_seconds")
    )
    return (
        select(
            firsts.c.member_id,
            firsts.c.first_at,
            seconds.c.second_at,
            firsts.c.orders,
            firsts.c.revenue,
        )
        .outerjoin(seconds, seconds.c.member_id == firsts.c.member_id)
        .subquery(name)
    )


def first_orders(through: dt.datetime, currency: str) -> Any:
    """Every member's first and second counted order times (``member_id``, ``at``,
    ``second_at``) from the facts and the orders placed since ``through``. A subquery."""
    tail = aggregate(lambda o: o.c.placed_at >= through, currency, "order_facts_tail")
    kept = select(
        OrderFacts.member_id,
        OrderFacts.first_at.label("at"),
        func.coalesce(OrderFacts.second_at, tail.c.first_at).label("second_at"),
    ).outerjoin(tail, tail.c.member_id == OrderFacts.member_id)
    fresh = select(tail.c.member_id, tail.c.first_at, tail.c.second_at).where(
        ~exists().where(OrderFacts.member_id == tail.c.member_id)
    )
    return union_all(kept, fresh).subquery("first_orders")


def _insert_full(
    session: Session, until: dt.datetime, currency: str, member_ids: list[str] | None
) -> None:
    """Rows for ``member_ids`` (None: everyone) from all their orders placed before
    ``until``."""

    def window(orders: Any) -> ColumnElement[bool]:
        placed = orders.c.placed_at < until
        return placed if member_ids is None else and_(placed, orders.c.member_id.in_(member_ids))

    rows = aggregate(window, currency)
    session.execute(insert(OrderFacts).from_select(COLUMNS, select(*rows.c)))


def _add_window(session: Session, start: dt.datetime, until: dt.datetime, currency: str) -> None:
    """Add the orders placed in ``[start, until)``: new rows for members without one, else
    one more second order (if none yet), count and revenue. Every order kept was placed
    before ``start``, so the first stays."""
    rows = aggregate(lambda o: and_(o.c.placed_at >= start, o.c.placed_at < until), currency)
    upsert = dialect_insert(session)
    # WHERE: SQLite needs one between INSERT ... SELECT and ON CONFLICT.
    statement = upsert(OrderFacts).from_select(
        COLUMNS, select(*rows.c).where(rows.c.member_id.is_not(None))
    )
    statement = statement.on_conflict_do_update(
        index_elements=["member_id"],
        set_={
            "second_at": func.coalesce(OrderFacts.second_at, statement.excluded.first_at),
            "orders": OrderFacts.orders + statement.excluded.orders,
            "revenue": OrderFacts.revenue + statement.excluded.revenue,
        },
    )
    session.execute(statement)


def _chunks(items: Iterable[str]) -> Iterable[list[str]]:
    ordered = sorted(items)
    for index in range(0, len(ordered), CHUNK):
        yield ordered[index : index + CHUNK]


def refresh(session: Session, *, now: dt.datetime | None = None) -> dict[str, int]:
    """Bring the order facts up to ``now``: build them when they are not (or the analytics
    currency changed), else add the orders since the last refresh and recompute the members
    whose past changed. Counts."""
    now = now or clock.now()
    with unit_of_work(session):
        currency = get_settings(session).currency
        current = session.get(OrderFactsState, 1, with_for_update=True)
        if current is None or current.through > now or current.currency != currency:
            session.execute(delete(OrderFacts))
            _insert_full(session, now, currency, None)
            if current is None:
                current = OrderFactsState(id=1)
                session.add(current)
            current.currency = currency
            current.built_at = current.through = current.refreshed_at = now
            return {"order facts rebuilt": 1}
        # The window first: the members recomputed in full below replace what it added.
        _add_window(session, current.through, now, currency)
        late = set(
            session.scalars(
                ledger.late_order_members(current.refreshed_at - LATE_MARGIN, current.through)
            )
        )
        for chunk in _chunks(late):
            session.execute(delete(OrderFacts).where(OrderFacts.member_id.in_(chunk)))
            _insert_full(session, now, currency, chunk)
        current.through = current.refreshed_at = now
        return {"order facts members recomputed": len(late)}
