"""Reading points: balances and what expires soon, ledger entries, orders with their refunds,
holds, and what other areas ask of a member's history (activity for tiers and badges, points
placed for caps, the first order reaching a total for referrals); and the walks of lifecycle
triggers (first orders as they are recorded, points by expiry moment, members by last
activity), each a page at a time in the order of an index.

Reads settle a wallet's due work first where the figures must be those of now.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any, Generic, TypeVar, cast

import iso4217
from sqlalchemy import (
    ColumnElement,
    Exists,
    Numeric,
    Select,
    Table,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy import cast as sa_cast
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from loyalty import clock
from loyalty.auth.rules import DEFAULT_CHANNEL
from loyalty.db import Page, fetch_page, keyset_page
from loyalty.errors import InvalidFieldError
from loyalty.ledger import rules
from loyalty.ledger.errors import HoldNotFoundError, OrderNotFoundError
from loyalty.ledger.models import Entry, Hold, Lot, Order, Refund, Wallet
from loyalty.ledger.service._core import _aware, _is_due, _member, locked_wallet
from loyalty.ledger.service.due import settle_wallet, settle_wallets
from loyalty.members.models import Member

EXPIRING_WINDOW = dt.timedelta(days=90)
T = TypeVar("T")


@dataclass(frozen=True)
class Expiring:
    points: int
    expires_at: dt.datetime


@dataclass(frozen=True)
class BalanceReport:
    available: int
    pending: int
    held: int
    lifetime_earned: int
    expiring: list[Expiring]


def points_summaries(
    session: Session, member_ids: list[str], *, settle: bool = False
) -> dict[str, Wallet]:
    """The wallets of these members, by member id (members without one have no points yet).
    With ``settle``, due work (activations, expiries, hold timeouts) is done first, so the
    balances are those of now; do not ask for it inside another unit of work. For several
    members a wallet another transaction holds is not waited for: it is being worked on, and
    its committed balances are shown."""
    if not member_ids:
        return {}
    wallets = {
        wallet.member_id: wallet
        for wallet in session.scalars(select(Wallet).where(Wallet.member_id.in_(member_ids)))
    }
    if settle:
        now = clock.now()
        due = [m for m, wallet in wallets.items() if _is_due(wallet, now)]
        if due:
            settle_wallets(session, member_ids=due, skip_locked=len(member_ids) > 1)
            for wallet in wallets.values():
                session.refresh(wallet)
    return wallets


# Built once: a balance read sends both (building a statement costs about as much CPU as
# sending it).
_MEMBER_AND_WALLET = (
    select(Member, Wallet)
    .outerjoin(Wallet, Wallet.member_id == Member.id)
    .where(Member.id == bindparam("member_id"))
)
_EXPIRING = (
    select(Lot.expires_at, Lot.remaining)
    .where(
        Lot.wallet_id == bindparam("wallet_id"),
        Lot.remaining > 0,
        Lot.activated_at.is_not(None),
        Lot.expires_at.is_not(None),
        Lot.expires_at <= bindparam("until"),
    )
    .order_by(Lot.expires_at)
)


def _settled_wallet(session: Session, member_id: str) -> Wallet | None:
    """The member's wallet after its due work, if any, is done. Raises
    `MemberNotFoundError`."""
    # The member and the wallet in one round trip (a member without a wallet yet: None).
    found = session.execute(_MEMBER_AND_WALLET, {"member_id": member_id}).first()
    if found is None:
        _member(session, member_id)  # raises MemberNotFoundError
    wallet = found[1] if found is not None else None
    if wallet is not None and _is_due(wallet, clock.now()):
        settle_wallet(session, wallet_id=wallet.id)
        session.refresh(wallet)
    return wallet


def get_balance(session: Session, member_id: str) -> BalanceReport:
    """Balances and the points expiring in the next 90 days, grouped by day, soonest first.

    Settles due work first when there is some (an activation or expiry whose time has come),
    so the figures are those of now. Raises `MemberNotFoundError`.
    """
    wallet = _settled_wallet(session, member_id)
    now = clock.now()
    if wallet is None:
        return BalanceReport(0, 0, 0, 0, [])
    lots = session.execute(
        _EXPIRING, {"wallet_id": wallet.id, "until": now + EXPIRING_WINDOW}
    ).all()
    by_day: dict[dt.date, list[Any]] = {}
    for expires_at, remaining in lots:
        assert expires_at is not None
        day = expires_at.date()
        if day in by_day:
            by_day[day][0] += remaining
        else:
            by_day[day] = [remaining, expires_at]
    # Debt is repaid before points become available, so nothing is "expiring" while in debt.
    expiring = [] if wallet.debt else [Expiring(p, at) for p, at in by_day.values()]
    return BalanceReport(
        wallet.available, wallet.pending, wallet.held, wallet.lifetime_earned, expiring
    )


def list_entries(
    session: Session, member_id: str, *, limit: int = 50, cursor: str | None = None
) -> Page[Entry]:
    """The member's ledger entries, newest first, due work done first (so an activation or
    expiry whose time has come is in the history). Raises `MemberNotFoundError`."""
    wallet = _settled_wallet(session, member_id)
    # Through the wallet, whose (wallet_id, id) index walks the member's entries only; by the
    # member's id PostgreSQL walks every later entry of the ledger. No wallet, no entries.
    query: Select[Entry] = (
        select(Entry)
        .where(Entry.wallet_id == (wallet.id if wallet is not None else None))
        .order_by(Entry.id.desc())
    )
    return keyset_page(session, query, Entry.id, limit, cursor, newest_first=True, numeric=True)


@dataclass(frozen=True)
class Activity:
    """A member's earning activity over a period (for tiers, campaigns and badges)."""

    points_earned: int  # points credited as earned (orders, bonuses) less those reversed
    spend: int  # money of the orders placed, less refunds, in major units (all currencies)
    orders: int  # orders placed and not wholly refunded


def activity(
    session: Session,
    member_id: str,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    measures: tuple[str, ...] = ("points", "spend", "orders"),
) -> Activity:
    """What the member earned and spent in ``[since, until)`` (open ends: all time). Points
    count by when they were credited; spend and orders by when the orders were placed. Only
    the ``measures`` asked for are read (the others are 0)."""
    bounds = {"member_id": member_id, "since": since, "until": until}
    points = 0
    if "points" in measures:
        wallet = locked_wallet(session, member_id)
        if since is None and until is None and wallet is not None:
            points = wallet.lifetime_earned  # the sum of its entries' earned points (invariant 2)
        else:
            points = int(session.scalar(_points_query(since is None, until is None), bounds) or 0)
    spend = Decimal(0)
    orders = 0
    rows: list[Any] = []
    if {"spend", "orders"} & set(measures):
        wallet = locked_wallet(session, member_id)
        if since is None and until is None and wallet is not None:
            # What its orders add up to, kept with them (invariant 8).
            return Activity(
                points_earned=points, spend=int(wallet.spend), orders=wallet.order_count
            )
        rows = list(session.execute(_orders_query(since is None, until is None), bounds))
    for currency, money, count in rows:
        spend += rules.major_units(int(money), currency)
        orders += int(count)
    return Activity(points_earned=points, spend=int(spend), orders=orders)


# Built once per shape (open or closed ends): tiers and badges ask on every accrual, and
# building a statement costs about as much CPU as sending it.
@cache
def _points_query(from_start: bool, to_now: bool) -> Select[Any]:
    # The member's entries through their wallet's (wallet_id, id) index: by the member's id
    # alone PostgreSQL would read every entry of the period.
    wallet = select(Wallet.id).where(Wallet.member_id == bindparam("member_id"))
    query = select(func.coalesce(func.sum(Entry.earned_delta), 0)).where(
        Entry.wallet_id == wallet.scalar_subquery()
    )
    if not from_start:
        query = query.where(Entry.created_at >= bindparam("since"))
    if not to_now:
        query = query.where(Entry.created_at < bindparam("until"))
    return query


@cache
def _orders_query(from_start: bool, to_now: bool) -> Select[str, int, int]:
    query = (
        select(
            Order.currency,
            func.coalesce(func.sum(Order.total - Order.amount_refunded), 0),
            func.count(),
        )
        .where(Order.member_id == bindparam("member_id"), Order.amount_refunded < Order.total)
        .group_by(Order.currency)
    )
    if not from_start:
        query = query.where(Order.placed_at >= bindparam("since"))
    if not to_now:
        query = query.where(Order.placed_at < bindparam("until"))
    return query


def _major_units(currency: Any) -> ColumnElement[Any]:
    """How many minor units make a major one, in SQL, for the currencies orders carry (an
    order's currency always has an ISO 4217 exponent: `rules.currency_exponent`)."""
    by_exponent: dict[int, list[str]] = {}
    for known in iso4217.Currency:
        exponent = known.exponent
        if exponent is not None and exponent != 2:
            by_exponent.setdefault(exponent, []).append(known.code)
    # Inline constants from the ISO table (not parameters: the statement keeps within
    # psycopg's cached conversions).
    return case(
        *(
            (
                currency.in_([literal_column(f"'{code}'") for code in sorted(codes)]),
                literal_column(str(10**exponent)),
            )
            for exponent, codes in sorted(by_exponent.items())
        ),
        else_=literal_column("100"),
    )


@cache
def order_measure(measure: str, from_start: bool, to_now: bool) -> Select[Any]:
    """The member's ``spend`` (money of the orders placed, less refunds, in major units, all
    currencies added, truncated) or ``orders`` (orders placed and not wholly refunded) in
    ``[since, until)``, as `activity` counts them, in one statement of one row and column
    (parameters ``member_id``, ``since``, ``until``), for other areas to build on. Over all
    time it reads what the member's wallet keeps (invariant 8), not every order. Built on the
    tables, not the mapped classes: a Core statement, which `Session.execute` sends without
    the ORM's work on it (nor its autoflush: the accrual writes its order and wallet before,
    a refund flushes them)."""
    if from_start and to_now:
        wallets = cast(Table, Wallet.__table__).c
        kept = func.trunc(wallets.spend) if measure == "spend" else wallets.order_count
        # An aggregate: one row (0) for a member without a wallet.
        return select(func.coalesce(func.sum(kept), 0).label("value")).where(
            wallets.member_id == bindparam("member_id")
        )
    orders = cast(Table, Order.__table__).c
    counted = and_(
        orders.member_id == bindparam("member_id"), orders.amount_refunded < orders.total
    )
    if measure == "spend":
        money = sa_cast(orders.total - orders.amount_refunded, Numeric)
        value: Any = func.trunc(func.coalesce(func.sum(money / _major_units(orders.currency)), 0))
    else:
        value = func.count()
    query = select(value.label("value")).select_from(orders.member_id.table).where(counted)
    if not from_start:
        query = query.where(orders.placed_at >= bindparam("since"))
    if not to_now:
        query = query.where(orders.placed_at < bindparam("until"))
    return query


def order_points_placed(
    session: Session, member_id: str, periods: Sequence[tuple[dt.datetime, dt.datetime]]
) -> list[int]:
    """For each ``[since, until)`` of ``periods``, the points the member's orders placed then
    earned, less what refunds took back (for caps); one query for all of them."""
    if not periods:
        return []
    parameters: dict[str, Any] = {
        "member_id": member_id,
        "low": min(a for a, _ in periods),
        "high": max(b for _, b in periods),
    }
    for n, (since, until) in enumerate(periods):
        parameters[f"since_{n}"], parameters[f"until_{n}"] = since, until
    row = session.execute(_placed_query(len(periods)), parameters).one()
    return [int(points or 0) for points in row]


@cache
def _placed_query(periods: int) -> Select[Any]:
    return _placed(bindparam("member_id"), periods, "")


def points_placed_lateral(member_id: ColumnElement[str], periods: int, prefix: str) -> Any:
    """`order_points_placed` of the member ``member_id`` names (a column of an enclosing
    statement), as a lateral subquery of one row, columns ``p0``, ``p1``, ...; parameters
    ``{prefix}_since_{n}``, ``{prefix}_until_{n}``, ``{prefix}_low``, ``{prefix}_high``."""
    return _placed(member_id, periods, f"{prefix}_").lateral(f"{prefix}placed")


def _placed(member_id: Any, periods: int, prefix: str) -> Select[Any]:
    net = Order.points - Order.points_reversed
    return select(
        *(
            func.coalesce(
                func.sum(
                    case(
                        (
                            and_(
                                Order.placed_at >= bindparam(f"{prefix}since_{n}"),
                                Order.placed_at < bindparam(f"{prefix}until_{n}"),
                            ),
                            net,
                        )
                    )
                ),
                0,
            ).label(f"p{n}")
            for n in range(periods)
        )
    ).where(
        Order.member_id == member_id,
        Order.placed_at >= bindparam(f"{prefix}low"),
        Order.placed_at < bindparam(f"{prefix}high"),
    )


@dataclass(frozen=True)
class OrderRef:
    """What other areas need of an order: its key and when its points activate."""

    pk: str
    activates_at: dt.datetime


def _reaching(min_total: int, currency: str | None) -> list[ColumnElement[bool]]:
    """Orders whose total after refunds is above 0 and at least ``min_total`` (in
    ``currency`` when given)."""
    net = Order.total - Order.amount_refunded
    conditions = [net > 0, net >= min_total]
    if currency is not None:
        conditions.append(Order.currency == currency)
    return conditions


def first_order_reaching(
    session: Session, member_id: str, *, min_total: int, currency: str | None
) -> OrderRef | None:
    """The member's first order by placement whose total after refunds reaches
    ``min_total`` (in ``currency`` when given)."""
    row = session.execute(
        select(Order.id, Order.activates_at)
        .where(Order.member_id == member_id, *_reaching(min_total, currency))
        .order_by(Order.placed_at, Order.id)
        .limit(1)
    ).first()
    return OrderRef(row[0], _aware(row[1])) if row is not None else None


def has_order_reaching(
    member_id: ColumnElement[str] | InstrumentedAttribute[str],
    *,
    min_total: int,
    currency: str | None,
    by: dt.datetime,
) -> Exists:
    """A condition for another area's query: the member ``member_id`` (a column of it) has an
    order reaching ``min_total`` whose points activate by ``by``."""
    return (
        select(Order.id)
        .where(
            Order.member_id == member_id,
            Order.activates_at <= by,
            *_reaching(min_total, currency),
        )
        .exists()
    )


@dataclass(frozen=True)
class OrderView:
    """An order as the storefront reported it, what it earned, and its refunds."""

    order: Order
    refunds: list[Refund]
    status: str  # pending or active

    def __getattr__(self, name: str) -> Any:
        return getattr(self.order, name)


def get_order(session: Session, *, order_id: str, channel_id: str = DEFAULT_CHANNEL) -> OrderView:
    """The channel's order ``order_id`` with its refunds. Raises `OrderNotFoundError`."""
    order = session.scalar(
        select(Order).where(Order.channel_id == channel_id, Order.order_id == order_id)
    )
    if order is None:
        raise OrderNotFoundError(order_id)
    return _order_views(session, [order])[0]


def list_member_orders(
    session: Session, member_id: str, *, limit: int = 50, cursor: str | None = None
) -> Page[OrderView]:
    """The member's orders from every channel, the most recently placed first (imported
    history after newer orders), with their refunds. Raises `MemberNotFoundError` and
    `InvalidFieldError` for a cursor this call did not give."""
    _member(session, member_id)
    query = (
        select(Order)
        .where(Order.member_id == member_id)
        .order_by(Order.placed_at.desc(), Order.id.desc())
    )
    if cursor is not None:
        placed, _, order_pk = cursor.partition("|")
        try:
            after = dt.datetime.fromisoformat(placed)
        except ValueError:
            raise InvalidFieldError("cursor", "Not a valid cursor.") from None
        if after.tzinfo is None or not order_pk:
            raise InvalidFieldError("cursor", "Not a valid cursor.")
        query = query.where(
            or_(Order.placed_at < after, and_(Order.placed_at == after, Order.id < order_pk))
        )
    page = fetch_page(session, query, limit, lambda last: f"{last.placed_at.isoformat()}|{last.id}")
    return Page(
        items=_order_views(session, page.items),
        next_cursor=page.next_cursor,
    )


def _order_views(session: Session, orders: list[Order]) -> list[OrderView]:
    refunds: dict[str, list[Refund]] = {order.id: [] for order in orders}
    if orders:
        for refund in session.scalars(
            select(Refund)
            .where(Refund.order_pk.in_(list(refunds)))
            .order_by(Refund.created_at, Refund.id)
        ):
            refunds[refund.order_pk].append(refund)
    now = clock.now()
    return [
        OrderView(
            order,
            refunds[order.id],
            "pending" if order.points and order.activates_at > now else "active",
        )
        for order in orders
    ]


def get_hold(session: Session, hold_id: str) -> Hold:
    """A hold as of now: one whose time ran out is released first (status ``expired``).
    Raises `HoldNotFoundError`."""
    hold = session.get(Hold, hold_id)
    if hold is None:
        raise HoldNotFoundError(hold_id)
    if hold.status == "held" and hold.expires_at <= clock.now():
        settle_wallet(session, wallet_id=hold.wallet_id)
        session.refresh(hold)
    return hold


# --- walks for lifecycle triggers -------------------------------------------------------------


@dataclass(frozen=True)
class Walk(Generic[T]):
    """One page of a walk through a table in the order of an index: what qualified on the
    page, the position reached (where the next page starts) and whether more may follow."""

    items: list[T]
    last: Any
    more: bool


@dataclass(frozen=True)
class RecordedOrder:
    """An order as lifecycle triggers see it."""

    pk: str
    order_id: str
    channel_id: str
    member_id: str
    placed_at: dt.datetime
    recorded_at: dt.datetime


def latest_order_pk(session: Session) -> str | None:
    """The key of the order recorded last (order keys are time-ordered), if any."""
    return session.scalar(select(func.max(Order.id)))


def first_orders_after(session: Session, *, after: str | None, limit: int) -> Walk[RecordedOrder]:
    """Walk orders as they were recorded (by key: keys are time-ordered), ``limit`` at a time
    from after the key ``after`` (None: from the first). The items are the page's orders that
    are their member's first (no order of the member was recorded before) for members who are
    active; ``last`` is the key of the page's last order."""
    page = select(Order.id).order_by(Order.id).limit(limit)
    if after is not None:
        page = page.where(Order.id > after)
    keys = list(session.scalars(page))
    if not keys:
        return Walk([], after, False)
    earlier = aliased(Order)
    rows = session.execute(
        select(
            Order.id,
            Order.order_id,
            Order.channel_id,
            Order.member_id,
            Order.placed_at,
            Order.created_at,
        )
        .join(Member, Member.id == Order.member_id)
        .where(
            Order.id.in_(keys),
            Member.status == "active",
            ~select(earlier.id)
            .where(earlier.member_id == Order.member_id, earlier.id < Order.id)
            .exists(),
        )
        .order_by(Order.id)
    ).all()
    return Walk([RecordedOrder(*row) for row in rows], keys[-1], len(keys) == limit)


def _set(moment: dt.datetime | None) -> dt.datetime:
    """A moment the query's conditions make sure is there (never NULL), timezone-aware."""
    assert moment is not None
    return _aware(moment)


def _after(
    moment: InstrumentedAttribute[Any], key: InstrumentedAttribute[Any], after: tuple[Any, Any]
) -> ColumnElement[bool]:
    """Rows past the position ``after``: (a moment, and the key reached at it; None when
    every row at that moment is behind)."""
    at, reached = after
    if reached is None:
        return moment > at
    return and_(moment >= at, or_(moment > at, key > reached))


@dataclass(frozen=True)
class ExpiringPoints:
    """Points of a member that expire at one moment and can still be spent."""

    member_id: str
    expires_at: dt.datetime
    points: int


def points_expiring(
    session: Session, *, after: tuple[dt.datetime, str | None], until: dt.datetime, limit: int
) -> Walk[ExpiringPoints]:
    """Walk lots by expiry moment, then wallet, up to ``until``: the next ``limit`` (moment,
    wallet) pairs after the position ``after`` (a moment, and the wallet reached at it: None
    when the moment is done). The items are, for each pair of the page whose member is
    active, the points that expire then and are still there to spend (remaining on active
    lots not expired); ``last`` is the (moment, wallet) reached."""
    spendable = and_(Lot.remaining > 0, Lot.activated_at.is_not(None), Lot.expired_at.is_(None))
    page = session.execute(
        select(
            Lot.expires_at,
            Lot.wallet_id,
            func.coalesce(func.sum(Lot.remaining).filter(spendable), 0),
        )
        .where(_after(Lot.expires_at, Lot.wallet_id, after), Lot.expires_at <= until)
        .group_by(Lot.expires_at, Lot.wallet_id)
        .order_by(Lot.expires_at, Lot.wallet_id)
        .limit(limit)
    ).all()
    if not page:
        return Walk([], after, False)
    owners = {
        wallet_id: member_id
        for wallet_id, member_id in session.execute(
            select(Wallet.id, Wallet.member_id)
            .join(Member, Member.id == Wallet.member_id)
            .where(
                Wallet.id.in_(sorted({wallet_id for _, wallet_id, points in page if points})),
                Member.status == "active",
            )
        )
    }
    items = [
        ExpiringPoints(owners[wallet_id], _set(at), int(points))
        for at, wallet_id, points in page
        if points and wallet_id in owners
    ]
    return Walk(items, (_set(page[-1][0]), page[-1][1]), len(page) == limit)


@dataclass(frozen=True)
class LastActivity:
    """When a member was last active, as the ledger counts it."""

    member_id: str
    at: dt.datetime


def last_activities(
    session: Session,
    *,
    after: tuple[dt.datetime, str | None] | None,
    until: dt.datetime,
    limit: int,
) -> Walk[LastActivity]:
    """Walk members by last activity, then member id, up to ``until``: the next ``limit``
    after the position ``after`` (a moment, and the member reached at it: None when the
    moment is done; None: from the start). Activity is the wallet's last earning or spending
    (`Wallet.last_activity_at`), or enrolment for a member without one. The items are the
    page's members who are active; ``last`` is the (moment, member) reached."""
    wallets = (
        select(Wallet.last_activity_at, Wallet.member_id)
        .where(Wallet.last_activity_at.is_not(None), Wallet.last_activity_at <= until)
        .order_by(Wallet.last_activity_at, Wallet.member_id)
        .limit(limit)
    )
    enrolments = (
        select(Member.enrolled_at, Member.id)
        .where(Member.enrolled_at <= until)
        .order_by(Member.enrolled_at, Member.id)
        .limit(limit)
    )
    if after is not None:
        wallets = wallets.where(_after(Wallet.last_activity_at, Wallet.member_id, after))
        enrolments = enrolments.where(_after(Member.enrolled_at, Member.id, after))
    # (moment, member, from the wallet). A member enrolled at the moment of their last
    # activity is at one position in both walks: the wallet's comes first, so that the page
    # never ends between the two (the enrolment is not their last activity).
    active = [(_set(at), member_id, True) for at, member_id in session.execute(wallets)]
    enrolled = [(_aware(at), member_id, False) for at, member_id in session.execute(enrolments)]
    # The first ``limit`` of both walks: everything before the last of them has been seen.
    page = sorted(active + enrolled, key=lambda row: (row[0], row[1], not row[2]))[:limit]
    if not page:
        return Walk([], after, False)
    members = {member_id for _, member_id, _ in page}
    statuses = {
        member_id: status
        for member_id, status in session.execute(
            select(Member.id, Member.status).where(Member.id.in_(members))
        )
    }
    with_activity = set(
        session.scalars(
            select(Wallet.member_id).where(
                Wallet.member_id.in_([m for _, m, from_wallet in page if not from_wallet]),
                Wallet.last_activity_at.is_not(None),
            )
        )
    )
    items = [
        LastActivity(member_id, at)
        for at, member_id, from_wallet in page
        if statuses.get(member_id) == "active" and (from_wallet or member_id not in with_activity)
    ]
    more = len(active) + len(enrolled) > limit or limit in (len(active), len(enrolled))
    return Walk(items, (page[-1][0], page[-1][1]), more)
