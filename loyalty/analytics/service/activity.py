"""Cohort activity (`CohortActivity`): what cohort retention needs of each member's activity,
kept by the worker's daily pass so that the cohort reports read one row per member instead of
every order, redemption and event with its local date.

For each member and basis (``enrollment``, ``first_order``) a row holds the local day they
joined on that basis, one bit per retention mark they were active in (`rules.MARKS`) and one
bit per calendar month since the joining month they were active in (months 0 to 59). It counts
the activity before the state's ``through``; reports add what came since from the source
tables (`bits` over ``[through, now)``), so figures are never older than the last refresh.

`refresh` (the worker, once a day) builds it the first time, then only adds the activity since
the last ``through`` (bits are ORed in, so a re-run changes nothing) and recomputes in full the
members whose past changed since the last refresh: orders back-filled before ``through``,
refunds of such orders, events recorded late, redemptions committed late, members whose time
zone (or anything else) changed. Rows recorded up to `LATE_MARGIN` before the last refresh are
looked at again, for transactions that committed after it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
)
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.analytics import rules
from loyalty.analytics.models import CohortActivity, CohortActivityState
from loyalty.analytics.service._sql import Dialect, activity
from loyalty.community import reporting as community
from loyalty.db import dialect_insert, unit_of_work
from loyalty.ledger import reporting as ledger
from loyalty.members.models import Member

BASES = ("enrollment", "first_order")
# Months of the monthly matrix a row keeps (the reports' maximum).
MONTHS = 60
# Changes recorded this long before the last refresh are looked at again (late commits).
LATE_MARGIN = dt.timedelta(hours=1)
# Members recomputed in full per statement.
CHUNK = 2000


def state(session: Session, now: dt.datetime | None = None) -> CohortActivityState | None:
    """The table's state when reports may read it (built, and not ahead of ``now``)."""
    row = session.get(CohortActivityState, 1)
    if row is None or (now is not None and row.through > now):
        return None
    return row


def mark_bit(index: int) -> ColumnElement[int]:
    return literal_column(str(1 << index))


def bits(
    d: Dialect,
    member_id: Any,
    timezone: Any,
    joined: Any,
    *,
    start: dt.datetime | None,
    until: dt.datetime,
    where: Any = None,
) -> Select[*tuple[Any, ...]]:
    """``member_id``, ``joined``, ``marks``, ``months`` of the activity in ``[start, until)``
    of the members the columns come from (``joined``: their local joining day), one row per
    member with any. ``where`` further restricts the members."""
    acts = activity()
    day = d.local_date(acts.c.at, timezone)
    window = acts.c.at < until
    if start is not None:
        window = and_(acts.c.at >= start, window)
    days = (
        select(member_id.label("member_id"), joined.label("joined"), day.label("day"))
        .join_from(member_id.table, acts, acts.c.member_id == member_id)
        .where(window, *([] if where is None else [where]))
        .distinct()
        .subquery("active_days")
    )
    diff = d.days_between(days.c.joined, days.c.day)
    mark = case(
        *[
            (and_(diff >= lo, diff <= hi), mark_bit(index))
            for index, (_name, lo, hi) in enumerate(rules.MARKS)
        ],
        else_=literal_column("0"),
    )
    offset = d.month_number(days.c.day) - d.month_number(days.c.joined)
    month = case(
        (
            and_(offset >= 0, offset < MONTHS),
            cast(literal_column("1"), BigInteger).op("<<")(offset),
        ),
        else_=cast(literal_column("0"), BigInteger),
    )
    return select(
        days.c.member_id,
        days.c.joined,
        cast(d.union_of_bits(mark), BigInteger).label("marks"),
        cast(d.union_of_bits(month), BigInteger).label("months"),
    ).group_by(days.c.member_id, days.c.joined)


def _enrolled(d: Dialect) -> Any:
    """Members with the local day they enrolled."""
    return select(
        Member.id.label("member_id"),
        Member.timezone.label("timezone"),
        d.local_date(Member.enrolled_at, Member.timezone).label("joined"),
    )


def _first_ordered(d: Dialect, start: dt.datetime | None, until: dt.datetime) -> Any:
    """Members with the local day of their first counted order in ``[start, until)``."""
    orders = ledger.counted_orders().subquery()
    window = orders.c.placed_at < until
    if start is not None:
        window = and_(orders.c.placed_at >= start, window)
    firsts = (
        select(orders.c.member_id, func.min(orders.c.placed_at).label("at"))
        .where(window)
        .group_by(orders.c.member_id)
        .subquery("first_orders")
    )
    return select(
        Member.id.label("member_id"),
        Member.timezone.label("timezone"),
        d.local_date(firsts.c.at, Member.timezone).label("joined"),
    ).join(firsts, firsts.c.member_id == Member.id)


def _insert_full(
    session: Session, d: Dialect, until: dt.datetime, member_ids: list[str] | None
) -> None:
    """Rows of both bases for ``member_ids`` (None: everyone) from all their activity."""
    for basis in BASES:
        members = _enrolled(d) if basis == "enrollment" else _first_ordered(d, None, until)
        if member_ids is not None:
            members = members.where(Member.id.in_(member_ids))
        members = members.subquery("members")
        rows = bits(
            d, members.c.member_id, members.c.timezone, members.c.joined, start=None, until=until
        ).subquery("bits")
        session.execute(
            insert(CohortActivity).from_select(
                ["member_id", "basis", "joined_on", "marks", "months"],
                select(
                    rows.c.member_id, literal(basis), rows.c.joined, rows.c.marks, rows.c.months
                ),
            )
        )


def _late_members(session: Session, since: dt.datetime, before: dt.datetime) -> set[str]:
    late: set[str] = set(session.scalars(ledger.late_activity_members(since, before)))
    late.update(session.scalars(community.late_events(since, before)))
    late.update(session.scalars(select(Member.id).where(Member.updated_at >= since)))
    return late


def _chunks(items: Iterable[str]) -> Iterable[list[str]]:
    ordered = sorted(items)
    for index in range(0, len(ordered), CHUNK):
        yield ordered[index : index + CHUNK]


def _add_window(session: Session, d: Dialect, start: dt.datetime, until: dt.datetime) -> None:
    """OR the bits of the activity in ``[start, until)`` into the rows (new rows for members
    without one): idempotent."""
    acts = activity()
    active = (
        select(acts.c.member_id)
        .where(acts.c.at >= start, acts.c.at < until)
        .distinct()
        .subquery("active")
    )
    stored = select(CohortActivity).where(CohortActivity.basis == "first_order").subquery("stored")
    new_first = _first_ordered(d, start, until).subquery("new_first")
    first_joined = func.coalesce(stored.c.joined_on, new_first.c.joined)
    sources = {
        "enrollment": (
            d.local_date(Member.enrolled_at, Member.timezone),
            select(Member.id).join(active, active.c.member_id == Member.id),
        ),
        "first_order": (
            first_joined,
            select(Member.id)
            .join(active, active.c.member_id == Member.id)
            .outerjoin(stored, stored.c.member_id == Member.id)
            .outerjoin(new_first, new_first.c.member_id == Member.id)
            .where(first_joined.is_not(None)),
        ),
    }
    upsert = dialect_insert(session)
    for basis, (joined, chosen) in sources.items():
        members = chosen.add_columns(
            Member.timezone.label("timezone"), joined.label("joined")
        ).subquery("members")
        rows = bits(
            d, members.c.id, members.c.timezone, members.c.joined, start=start, until=until
        ).subquery("bits")
        statement = upsert(CohortActivity).from_select(
            ["member_id", "basis", "joined_on", "marks", "months"],
            select(
                rows.c.member_id, literal(basis), rows.c.joined, rows.c.marks, rows.c.months
            ).where(rows.c.member_id.is_not(None)),
        )
        statement = statement.on_conflict_do_update(
            index_elements=["member_id", "basis"],
            set_={
                "marks": CohortActivity.marks.op("|")(statement.excluded.marks),
                "months": CohortActivity.months.op("|")(statement.excluded.months),
            },
        )
        session.execute(statement)


def refresh(session: Session, *, now: dt.datetime | None = None) -> dict[str, int]:
    """Bring the cohort activity up to ``now``: build it when it is not, else add the
    activity since the last refresh and recompute the members whose past changed. Counts."""
    now = now or clock.now()
    with unit_of_work(session):
        d = Dialect(session)  # on SQLite: on this transaction's connection
        current = session.get(CohortActivityState, 1, with_for_update=True)
        if current is None or current.through > now:
            session.execute(delete(CohortActivity))
            _insert_full(session, d, now, None)
            if current is None:
                current = CohortActivityState(id=1, built_at=now)
                session.add(current)
            current.built_at = now
            current.through = current.refreshed_at = now
            return {"cohort activity rebuilt": 1}
        late = _late_members(session, current.refreshed_at - LATE_MARGIN, current.through)
        for chunk in _chunks(late):
            session.execute(delete(CohortActivity).where(CohortActivity.member_id.in_(chunk)))
            _insert_full(session, d, now, chunk)
        _add_window(session, d, current.through, now)
        current.through = current.refreshed_at = now
        return {"cohort activity members recomputed": len(late)}
