"""The points core: accrue, refund, redeem, hold, capture, release, adjust, and the due work
(activation, expiry, hold timeouts).

Every state-changing function is one unit of work that first locks the member's wallet row
(``SELECT ... FOR UPDATE``; SQLite serialises writers instead), then settles what is due on
that wallet, then applies its change. Locks are taken in one order (wallet, then its lots and
holds), so operations on one member queue rather than deadlock. Only this module writes the
ledger tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Exists, Select, and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.audit import service as audit_service
from loyalty.auth.rules import DEFAULT_CHANNEL
from loyalty.bus import publish
from loyalty.db import (
    Page,
    after_commit,
    constraint_name,
    dialect_insert,
    new_id,
    retrying,
    unit_of_work,
)
from loyalty.errors import (
    CaptureExceedsHoldError,
    EventInFutureError,
    EventTooOldError,
    HoldNotFoundError,
    HoldNotHeldError,
    InsufficientPointsError,
    InvalidFieldError,
    LoyaltyError,
    MemberClosedError,
    MemberNotActiveError,
    OrderConflictError,
    OrderInFutureError,
    OrderNotFoundError,
    OrderTooOldError,
    RedemptionAlreadyReturnedError,
    RedemptionNotFoundError,
    RefundConflictError,
    RefundExceedsOrderError,
)
from loyalty.ledger import events, ports, rules
from loyalty.ledger.models import (
    Allocation,
    Entry,
    Hold,
    Lot,
    Order,
    ProgramSettings,
    Redemption,
    Refund,
    Wallet,
)
from loyalty.members import rules as members_rules
from loyalty.members import service as members_service
from loyalty.members.models import Member

EXPIRING_WINDOW = dt.timedelta(days=90)
# No single order earns more (it keeps every balance far inside 64-bit integers).
MAX_ORDER_POINTS = 10**12

SETTINGS_FIELDS = (
    "earn_rate",
    "rounding",
    "pending_days",
    "expiry_policy",
    "expiry_months",
    "expiry_period",
    "refund_policy",
    "hold_timeout_seconds",
    "timezone",
    "max_order_age_days",
)
# Wallets marked due per transaction while the inactivity policy is switched on.
SWEEP_BATCH = 500
# The shortest month, for checking that inactivity leaves points spendable after the return
# window.
INACTIVITY_DAYS_PER_MONTH = 28


@dataclass(frozen=True)
class Balance:
    available: int
    pending: int
    held: int

    @classmethod
    def of(cls, wallet: Wallet | None) -> Balance:
        if wallet is None:
            return cls(0, 0, 0)
        return cls(wallet.available, wallet.pending, wallet.held)

    def as_dict(self) -> dict[str, int]:
        return {"available": self.available, "pending": self.pending, "held": self.held}


def _balance_after(wallet: Wallet) -> events.BalanceAfter:
    return events.BalanceAfter(wallet.available, wallet.pending, wallet.held)


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


@dataclass(frozen=True)
class Replayable:
    """The result of a call with a natural key: ``created`` False when it is a replay."""

    body: dict[str, Any]
    created: bool


@dataclass(frozen=True)
class PointsMove:
    """The result of a redemption or an adjustment."""

    id: str
    points: int
    balance: Balance


@dataclass(frozen=True)
class HoldResult:
    hold: Hold
    balance: Balance


# --- settings ------------------------------------------------------------------------------


def get_settings(session: Session) -> ProgramSettings:
    """The programme's core settings (the defaults until a manager changes them)."""
    settings = session.get(ProgramSettings, 1)
    if settings is None:  # a database migrated before the row existed; never expected
        settings = ProgramSettings(
            id=1,
            earn_rate=Decimal(1),
            rounding="floor",
            pending_days=14,
            expiry_policy="rolling",
            expiry_months=36,
            expiry_period="year",
            refund_policy="within_balance",
            hold_timeout_seconds=900,
            timezone="UTC",
            max_order_age_days=30,
        )
    return settings


@retrying
def update_settings(session: Session, *, changes: dict[str, Any], actor: str) -> ProgramSettings:
    """Change core settings. New values apply to points earned from now on: lots keep the
    expiry date they were given, except under the inactivity policy, which the job applies.

    Switching the inactivity policy on (or changing its months or time zone) marks every
    wallet due so the job looks at it: in short batches of their own once this change (and
    the request around it) has committed (see `sweep_due_wallets`; the job finishes a sweep
    that could not), never in one transaction over every wallet. Raises `InvalidFieldError`
    for an unknown time zone or an inactivity period not longer than the return window.
    """
    if "timezone" in changes and not members_rules.is_time_zone(changes["timezone"]):
        raise InvalidFieldError("timezone", "Not a known IANA time zone (e.g. Europe/Berlin).")
    with unit_of_work(session):
        settings = session.get(ProgramSettings, 1, with_for_update=True)
        if settings is None:
            settings = get_settings(session)
            session.add(settings)
        before = {field: getattr(settings, field) for field in SETTINGS_FIELDS}
        for field in SETTINGS_FIELDS:
            if field in changes:
                setattr(settings, field, changes[field])
        if (
            settings.expiry_policy == "inactivity"
            and settings.pending_days >= INACTIVITY_DAYS_PER_MONTH * settings.expiry_months
        ):
            raise InvalidFieldError(
                "expiry_months",
                "Under the inactivity policy, points must stay spendable for a while after "
                f"they activate: expiry_months ({settings.expiry_months}) must be longer than "
                f"the return window of {settings.pending_days} days.",
            )
        settings.updated_at = clock.now()
        settings.updated_by = actor
        after = {field: getattr(settings, field) for field in SETTINGS_FIELDS}
        if settings.expiry_policy == "inactivity" and (
            before["expiry_policy"] != "inactivity"
            or before["expiry_months"] != after["expiry_months"]
            or before["timezone"] != after["timezone"]
        ):
            settings.due_sweep_after = ""
            # After this commits (and after the whole request, with an Idempotency-Key), in
            # short batches of its own; if a member's wallet is busy the job finishes it.
            after_commit(session, lambda later: sweep_due_wallets(later))
        audit_service.record(
            session,
            actor=actor,
            action="updated",
            entity_type="program_settings",
            entity_id="core",
            before=before,
            after=after,
        )
    return settings


def sweep_due_wallets(session: Session, *, batch_size: int = SWEEP_BATCH) -> int:
    """Finish a pending sweep: mark wallets with points due now (the job then applies the
    inactivity policy to them), ``batch_size`` wallets per short transaction in member-id
    order, resuming where an interrupted sweep stopped. Returns the wallets marked."""
    marked = 0
    while True:
        done, count = _sweep_batch(session, batch_size)
        marked += count
        if done:
            return marked


@retrying
def _sweep_batch(session: Session, batch_size: int) -> tuple[bool, int]:
    with unit_of_work(session):
        settings = session.get(ProgramSettings, 1, with_for_update=True)
        if settings is None or settings.due_sweep_after is None:
            return True, 0
        if settings.expiry_policy != "inactivity":
            settings.due_sweep_after = None
            return True, 0
        after = settings.due_sweep_after
        # Locked in member-id order, the order every multi-wallet operation locks in.
        wallets = list(
            session.scalars(
                select(Wallet)
                .where(Wallet.member_id > after)
                .order_by(Wallet.member_id)
                .limit(batch_size)
                .with_for_update()
            )
        )
        now = clock.now()
        for wallet in wallets:  # the job settles each once and works out what is due next
            _note_due(wallet, now)
        settings.due_sweep_after = wallets[-1].member_id if len(wallets) == batch_size else None
    return settings.due_sweep_after is None, len(wallets)


def _expiry(settings: ProgramSettings, activated_at: dt.datetime) -> dt.datetime | None:
    """When points activating at ``activated_at`` expire under the programme's policy."""
    return rules.expiry_for(
        activated_at,
        settings.expiry_policy,
        settings.expiry_months,
        settings.expiry_period,
        settings.timezone,
    )


def _deadline(settings: ProgramSettings, last_activity_at: dt.datetime) -> dt.datetime:
    """The inactivity deadline after activity at ``last_activity_at``."""
    return rules.inactivity_deadline(last_activity_at, settings.expiry_months, settings.timezone)


# --- reading -------------------------------------------------------------------------------


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
        settings = get_settings(session)
        now = clock.now()
        due = [m for m, wallet in wallets.items() if _is_due(wallet, settings, now)]
        if due:
            settle_wallets(session, member_ids=due, skip_locked=len(member_ids) > 1)
            for wallet in wallets.values():
                session.refresh(wallet)
    return wallets


def _settled_wallet(session: Session, member_id: str) -> Wallet | None:
    """The member's wallet after its due work, if any, is done. Raises
    `MemberNotFoundError`."""
    _member(session, member_id)
    wallet = session.scalar(select(Wallet).where(Wallet.member_id == member_id))
    if wallet is not None and _is_due(wallet, get_settings(session), clock.now()):
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
        select(Lot.expires_at, Lot.remaining)
        .where(
            Lot.wallet_id == wallet.id,
            Lot.remaining > 0,
            Lot.activated_at.is_not(None),
            Lot.expires_at.is_not(None),
            Lot.expires_at <= now + EXPIRING_WINDOW,
        )
        .order_by(Lot.expires_at)
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
    _settled_wallet(session, member_id)
    query: Select[Entry] = (
        select(Entry).where(Entry.member_id == member_id).order_by(Entry.id.desc())
    )
    if cursor is not None:
        if not (cursor.isdigit() and len(cursor) <= 18):
            raise InvalidFieldError("cursor", "Not a valid cursor.")
        query = query.where(Entry.id < int(cursor))
    entries = list(session.scalars(query.limit(limit + 1)))
    more = len(entries) > limit
    entries = entries[:limit]
    return Page(items=entries, next_cursor=str(entries[-1].id) if more else None)


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
    points_query = select(func.coalesce(func.sum(Entry.earned_delta), 0)).where(
        Entry.member_id == member_id
    )
    orders_query = (
        select(
            Order.currency,
            func.coalesce(func.sum(Order.total - Order.amount_refunded), 0),
            func.count(),
        )
        .where(Order.member_id == member_id, Order.amount_refunded < Order.total)
        .group_by(Order.currency)
    )
    if since is not None:
        points_query = points_query.where(Entry.created_at >= since)
        orders_query = orders_query.where(Order.placed_at >= since)
    if until is not None:
        points_query = points_query.where(Entry.created_at < until)
        orders_query = orders_query.where(Order.placed_at < until)
    points = int(session.scalar(points_query) or 0) if "points" in measures else 0
    spend = Decimal(0)
    orders = 0
    rows: list[Any] = []
    if {"spend", "orders"} & set(measures):
        rows = list(session.execute(orders_query))
    for currency, money, count in rows:
        spend += Decimal(int(money)) / (Decimal(10) ** (rules.currency_exponent(currency) or 0))
        orders += int(count)
    return Activity(points_earned=points, spend=int(spend), orders=orders)


def order_points_placed(
    session: Session, member_id: str, since: dt.datetime, until: dt.datetime
) -> int:
    """Points the member's orders placed in ``[since, until)`` earned, less what refunds took
    back (for caps)."""
    points = session.scalar(
        select(func.coalesce(func.sum(Order.points - Order.points_reversed), 0)).where(
            Order.member_id == member_id, Order.placed_at >= since, Order.placed_at < until
        )
    )
    return int(points or 0)


def last_order_at(session: Session, member_id: str) -> dt.datetime | None:
    """When the member last placed an order, if ever."""
    moment = session.scalar(select(func.max(Order.placed_at)).where(Order.member_id == member_id))
    return _aware(moment) if moment is not None else None


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
    member_id: ColumnElement[str], *, min_total: int, currency: str | None, by: dt.datetime
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
    orders = list(session.scalars(query.limit(limit + 1)))
    more = len(orders) > limit
    orders = orders[:limit]
    last = orders[-1] if more else None
    return Page(
        items=_order_views(session, orders),
        next_cursor=f"{last.placed_at.isoformat()}|{last.id}" if last is not None else None,
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


# --- orders and refunds --------------------------------------------------------------------

# How far ahead of the server's clock an order or event may be dated (clock skew).
FUTURE_TOLERANCE = dt.timedelta(minutes=5)


def check_age(
    settings: ProgramSettings,
    moment: dt.datetime,
    now: dt.datetime,
    *,
    field: str,
    kind: str,
    history: bool = False,
) -> None:
    """Refuse an order or event dated more than 5 minutes ahead (`OrderInFutureError`,
    `EventInFutureError`) or, unless it is ``history`` (an import), more than the programme's
    maximum age ago (`OrderTooOldError`, `EventTooOldError`)."""
    if moment > now + FUTURE_TOLERANCE:
        raise EventInFutureError() if kind == "event" else OrderInFutureError(field)
    if not history and moment < now - dt.timedelta(days=settings.max_order_age_days):
        error = EventTooOldError if kind == "event" else OrderTooOldError
        raise error(field, settings.max_order_age_days, kind)


@retrying
def accrue_order(
    session: Session,
    *,
    order_id: str,
    member_id: str,
    total: int,
    currency: str,
    items: list[dict[str, Any]] | None = None,
    placed_at: dt.datetime | None = None,
    channel_id: str = DEFAULT_CHANNEL,
    client_id: str | None = None,
    actor: str | None = None,
    backfill: bool = False,
) -> Replayable:
    """Credit the points an order earns: pending for the return window, then active.

    Idempotent on ``(channel_id, order_id)``: the same order again returns the first result
    (``created`` False), whichever client of the channel reports it; the same order id with
    other data raises `OrderConflictError`. ``client_id`` records who reported it. Orders
    placed more than 5 minutes ahead are refused (`OrderInFutureError`), and so are orders
    placed more than the programme's maximum age ago (`OrderTooOldError`) unless
    ``backfill`` (the history import). Locks the member's wallet. Raises
    `MemberNotFoundError`, `MemberNotActiveError` and `InvalidFieldError` (unknown currency,
    duplicate SKUs).
    """
    items = [dict(item) for item in items or []]
    fingerprint = rules.request_fingerprint(
        "order",
        order_id,
        {
            "member_id": member_id,
            "total": total,
            "currency": currency.upper(),
            "items": items,
            "placed_at": placed_at.isoformat() if placed_at else None,
        },
    )
    exponent = rules.currency_exponent(currency)
    if exponent is None:
        raise InvalidFieldError("currency", "Not an ISO 4217 currency code.")
    skus = [item["sku"] for item in items]
    if len(set(skus)) != len(skus):
        raise InvalidFieldError("items", "Each SKU may appear once in an order.")

    with _conflicts_as(OrderConflictError(order_id)), unit_of_work(session):
        locked = _lock_wallet(session, member_id)
        wallet, settings = locked.wallet, locked.settings
        # Read after the lock, in a statement of its own: a concurrent report of this order
        # that held the lock has committed by now and must be seen.
        existing = session.scalar(
            select(Order).where(Order.channel_id == channel_id, Order.order_id == order_id)
        )
        if existing is not None:
            if existing.request_hash != fingerprint:
                raise OrderConflictError(order_id)
            return Replayable(existing.response, created=False)
        _require_active(locked.member)
        now = clock.now()
        if placed_at is not None:
            check_age(settings, placed_at, now, field="placed_at", kind="order", history=backfill)
        _settle(session, wallet, settings, now, actor)

        placed = placed_at or now
        quote = ports.price_order(
            session,
            member=locked.member,
            total=total,
            currency=currency.upper(),
            exponent=exponent,
            items=items,
            placed_at=placed,
            now=now,
            charge=True,
        )
        points = quote.points
        if points > MAX_ORDER_POINTS:
            raise InvalidFieldError(
                "total", f"The order would earn {points} points, above {MAX_ORDER_POINTS}."
            )
        amounts = rules.line_amounts(total, [i["quantity"] * i["unit_price"] for i in items])
        for item, share, amount in zip(items, quote.line_points, amounts, strict=True):
            item["points"] = share
            item["refunded_quantity"] = 0
            item["amount"] = amount  # the item's share of the total (for refunds)
            item["refunded_amount"] = 0
        activates_at = placed + dt.timedelta(days=settings.pending_days)
        pending = activates_at > now
        expires_at = _expiry(settings, activates_at)
        # Everything the wallet row gets is set before the entry's flush writes it, so the
        # common accrual costs one UPDATE of the wallet and one INSERT per new row.
        _touch(wallet, settings, now)
        if points > 0:
            _note_due(wallet, activates_at if pending else expires_at)
        order = Order(
            id=new_id("ord"),
            channel_id=channel_id,
            client_id=client_id,
            order_id=order_id,
            member_id=member_id,
            wallet_id=wallet.id,
            total=total,
            currency=currency.upper(),
            items=items,
            placed_at=placed,
            points=points,
            activates_at=activates_at,
            breakdown=[component.as_dict() for component in quote.components],
            request_hash=fingerprint,
        )
        entry = None
        if points > 0:
            entry = _post(
                session,
                wallet,
                kind="accrual",
                points=points,
                pending=points if pending else 0,
                available=0 if pending else points,
                earned=points,
                counter_account="issuance",
                reference=("order", order_id),
                reason=quote.describe()[:500],
                actor=actor,
                now=now,
                repays_debt=not pending,
            )
            order.entry_id = entry.id
        order.response = {
            "order_id": order_id,
            "member_id": member_id,
            "points": points,
            "status": "pending" if pending else "active",
            "activates_at": _timestamp(activates_at),
            "balance": Balance.of(wallet).as_dict(),
            "breakdown": order.breakdown,
            "description": quote.describe(),
        }
        session.add(order)
        if entry is not None:
            session.flush()  # the order before its lot
            session.add(
                Lot(
                    wallet_id=wallet.id,
                    entry_id=entry.id,
                    order_pk=order.id,
                    amount=points,
                    remaining=points,
                    activates_at=activates_at,
                    activated_at=None if pending else now,
                    expires_at=expires_at,
                    created_at=now,
                )
            )
            _repay(session, wallet, entry)
        else:
            session.flush()
        # Spend and order counts grow with every order, whatever it earned.
        publish(
            session,
            events.OrderRecorded(
                occurred_at=now,
                member_id=member_id,
                balance=_balance_after(wallet),
                actor=actor,
                order_pk=order.id,
                order_id=order_id,
                channel_id=channel_id,
                points=points,
                pending=pending,
                activates_at=activates_at,
            ),
        )
    return Replayable(order.response, created=True)


@retrying
def refund_order(
    session: Session,
    *,
    order_id: str,
    refund_id: str,
    amount: int | None = None,
    items: list[dict[str, Any]] | None = None,
    channel_id: str = DEFAULT_CHANNEL,
    client_id: str | None = None,
    actor: str | None = None,
) -> Replayable:
    """Reverse the points of (part of) an order, in proportion to the money refunded (item by
    item: an amount is shared over the items not yet refunded, and an item's money is its
    share of the order's total, discounts included).

    The points come from the order's own lots, pending ones first. Points of the order that
    expired meanwhile are gone: nothing is taken for them. Points of the order the member
    spent or holds are taken from the rest of the balance, soonest-expiring first (the
    holds and returnable redemptions that had the order's points then hold those instead);
    what is still missing is a shortfall (``within_balance``) or debt (``allow_negative``),
    and stays outstanding: order points that come back later (a released hold, a cancelled
    reward claim) are taken for it.

    The order and the refund id are the channel's (any of its clients may refund). Idempotent
    on ``(channel_id, refund_id)``. Locks the member's wallet and, when the member was
    referred, the referrer's (a clawback may take from it), in member-id order. Raises
    `OrderNotFoundError`, `RefundConflictError`, `RefundExceedsOrderError` and
    `InvalidFieldError`.
    """
    fingerprint = rules.request_fingerprint(
        "refund", refund_id, {"order_id": order_id, "amount": amount, "items": items}
    )
    with _conflicts_as(RefundConflictError(refund_id)), unit_of_work(session):
        order = session.scalar(
            select(Order).where(Order.channel_id == channel_id, Order.order_id == order_id)
        )
        if order is None:
            raise OrderNotFoundError(order_id)
        referrer_id = session.scalar(select(Member.referrer_id).where(Member.id == order.member_id))
        wallet = _lock_wallets(session, [order.member_id, referrer_id])[order.member_id].wallet
        session.refresh(order)
        existing = session.scalar(
            select(Refund).where(Refund.channel_id == channel_id, Refund.refund_id == refund_id)
        )
        if existing is not None:
            if existing.request_hash != fingerprint:
                raise RefundConflictError(refund_id)
            return Replayable(existing.response, created=False)
        settings = get_settings(session)
        now = clock.now()
        _settle(session, wallet, settings, now, actor)

        money, points, lines = _refund_share(order, amount, items)
        refund = Refund(
            id=new_id("rfd"),
            channel_id=channel_id,
            client_id=client_id,
            refund_id=refund_id,
            order_pk=order.id,
            amount=money,
            items=items or [],
            points_reversed=points,
            shortfall=0,
            request_hash=fingerprint,
            response={},
        )
        session.add(refund)
        session.flush()  # the refund before the entries that carry it out
        if points > 0:
            _reverse(session, wallet, order, refund, points, settings, now, actor)
        order.amount_refunded += money
        order.points_reversed += points
        order.items = lines
        session.flush()
        publish(
            session,
            events.OrderRefunded(
                occurred_at=now,
                member_id=order.member_id,
                balance=_balance_after(wallet),
                actor=actor,
                order_pk=order.id,
                order_id=order_id,
                refund_pk=refund.id,
                refund_id=refund_id,
                points=points,
                shortfall=refund.shortfall,
                order_total=order.total,
                amount_refunded=order.amount_refunded,
                currency=order.currency,
            ),
        )
        # Written once, after the other areas' clawbacks, so that a replay shows exactly
        # what this answer shows.
        refund.response = {
            "refund_id": refund_id,
            "order_id": order_id,
            "points_reversed": points,
            "shortfall": refund.shortfall,
            "balance": Balance.of(wallet).as_dict(),
        }
    return Replayable(refund.response, created=True)


# The natural keys that two racing reports (on two members' wallets, so not serialised by a
# wallet lock) can both try to claim.
_NATURAL_KEYS = ("uq_orders_channel_id_order_id", "uq_refunds_channel_id_refund_id")


@contextmanager
def _conflicts_as(conflict: LoyaltyError) -> Iterator[None]:
    """Turn a racing report's unique-key violation into ``conflict`` (409)."""
    try:
        yield
    except IntegrityError as error:
        if constraint_name(error) in _NATURAL_KEYS:
            raise conflict from error
        raise


def _refund_lines(order: Order) -> list[rules.RefundLine]:
    """The order's items as refund lines (an order without items is one line). Orders
    recorded before items carried their share of the money get it now, and what was refunded
    of them is spread as it was counted then."""
    if not order.items:
        return [
            rules.RefundLine(
                sku=None,
                quantity=1,
                refunded_quantity=0,
                amount=order.total,
                refunded_amount=order.amount_refunded,
                points=order.points,
            )
        ]
    items = order.items
    if all("amount" in item for item in items):
        return [
            rules.RefundLine(
                sku=item["sku"],
                quantity=item["quantity"],
                refunded_quantity=item["refunded_quantity"],
                amount=item["amount"],
                refunded_amount=item["refunded_amount"],
                points=item["points"],
            )
            for item in items
        ]
    amounts = rules.line_amounts(order.total, [i["quantity"] * i["unit_price"] for i in items])
    lines = [
        rules.RefundLine(
            sku=item["sku"],
            quantity=item["quantity"],
            refunded_quantity=item["refunded_quantity"],
            amount=share,
            refunded_amount=min(
                share, rules.cumulative_share(share, item["refunded_quantity"], item["quantity"])
            ),
            points=item["points"],
        )
        for item, share in zip(items, amounts, strict=True)
    ]
    rest = order.amount_refunded - sum(line.refunded_amount for line in lines)
    if rest > 0:
        room = [line.amount - line.refunded_amount for line in lines]
        for line, share in zip(lines, rules.split_points(min(rest, sum(room)), room), strict=True):
            line.refunded_amount += share
    return lines


def _refund_share(
    order: Order, amount: int | None, items: list[dict[str, Any]] | None
) -> tuple[int, int, list[dict[str, Any]]]:
    """How much money a refund returns, how many points it reverses, and the order's items
    with what is now refunded of each."""
    lines = _refund_lines(order)
    refundable = order.total - order.amount_refunded
    if order.total > 0 and refundable <= 0:
        raise RefundExceedsOrderError(
            "The order is wholly refunded: nothing is left to refund.", refundable_amount=0
        )
    wanted: list[tuple[str, int]] = []
    if items:
        skus = {line.sku for line in lines}
        for index, item in enumerate(items):
            if item["sku"] not in skus:
                raise InvalidFieldError(
                    f"items/{index}/sku", "The order has no item with this sku."
                )
            wanted.append((item["sku"], item["quantity"]))
    try:
        share = rules.refund_share(
            lines,
            points_reversed=order.points_reversed,
            order_points=order.points,
            amount=amount,
            items=wanted,
        )
    except rules.RefundTooLargeError as error:
        if error.sku is not None:
            raise RefundExceedsOrderError(
                f"Only {error.left} of this item are left to refund.",
                sku=error.sku,
                refundable_quantity=error.left,
            ) from None
        raise RefundExceedsOrderError(
            f"{refundable} of the order's {order.total} are left to refund.",
            refundable_amount=refundable,
        ) from None
    if share.money <= 0 and not items:
        raise RefundExceedsOrderError(
            "Nothing is left of the order to refund.", refundable_amount=refundable
        )
    # An order without items is one line of its own and keeps no items.
    new_items = [
        {
            **item,
            "refunded_quantity": line.refunded_quantity,
            "amount": line.amount,
            "refunded_amount": line.refunded_amount,
        }
        for item, line in zip(order.items, lines, strict=False)
    ]
    return share.money, share.points, new_items


def _reverse(
    session: Session,
    wallet: Wallet,
    order: Order,
    refund: Refund,
    points: int,
    settings: ProgramSettings,
    now: dt.datetime,
    actor: str | None,
) -> None:
    """Take ``points`` of ``order`` back for ``refund`` (see `refund_order` for the order in
    which they are found). Records on the refund what had expired, what was short and what
    stays outstanding."""
    own_lots = list(
        session.scalars(
            select(Lot)
            .where(Lot.order_pk == order.id)
            .order_by(Lot.activated_at.is_not(None), Lot.id)
            .execution_options(populate_existing=True)
        )
    )
    takes: list[tuple[Lot, int]] = []  # the reversal's allocations
    left = points
    from_pending = from_active = 0
    for lot in own_lots:  # pending lots first, then the order's active ones
        take = min(lot.remaining, left)
        if take:
            takes.append((lot, take))
            left -= take
            if lot.activated_at is None:
                from_pending += take
            else:
                from_active += take

    if left:  # expired points of the order are gone: nothing to take for them
        expired = _expired_points(session, order) - _points_expired_by_refunds(session, order)
        refund.points_expired = min(left, max(expired, 0))
        left -= refund.points_expired

    stand_in = _stand_in(session, wallet, order, left) if left else _StandIn([], [])
    takes += stand_in.takes
    from_active += stand_in.points
    left -= stand_in.points

    debt = left if settings.refund_policy == "allow_negative" else 0
    refund.shortfall = left - debt
    refund.debt = debt
    refund.outstanding = left
    notes = []
    if refund.points_expired:
        notes.append(f"{refund.points_expired} points had expired")
    if refund.shortfall:
        notes.append(f"{refund.shortfall} points already spent")
    # Every entry is written before any lot moves, so that a lot that gets points back and
    # gives them up again in this refund is never written in between.
    entry = _post(
        session,
        wallet,
        kind="reversal",
        points=-(from_pending + from_active + debt),
        pending=-from_pending,
        available=-(from_active + debt),
        debt=debt,
        earned=-points,
        counter_account="issuance",
        reference=("refund", refund.refund_id),
        reason=f"Refund of order {order.order_id}" + "".join(f"; {n}" for n in notes),
        actor=actor,
        now=now,
        refund=refund,
    )
    refund.entry_id = entry.id
    _transfer(
        session,
        wallet,
        stand_in,
        reason=f"Refund of order {order.order_id}: other points held in place of the order's",
        refund=refund,
        actor=actor,
        now=now,
    )
    for lot, take in takes:
        _allocate(session, entry, lot, take)


@dataclass(frozen=True)
class _StandIn:
    """Other available points standing in for points of an order that the member spent or
    holds: ``moves`` make holds and returnable redemptions hold other lots instead of the
    order's (planned per consumer), and ``takes`` are what the caller's entry takes: from the
    order's lots what the moves free, and from other lots the rest."""

    moves: list[tuple[_Consumer, list[tuple[Lot, int]]]]
    takes: list[tuple[Lot, int]]

    @property
    def points(self) -> int:
        return sum(take for _, take in self.takes)


def _stand_in(session: Session, wallet: Wallet, order: Order, points: int) -> _StandIn:
    """Plan up to ``points`` of other available points (soonest-expiring first) in place of
    the order's: first for the order's points that open holds and returnable redemptions hold
    (they may come back), then for points the member spent for good."""
    others = [lot for lot in _spendable_lots(session, wallet) if lot.order_pk != order.id]
    spare = {lot.id: lot.remaining for lot in others}
    moves: list[tuple[_Consumer, list[tuple[Lot, int]]]] = []
    takes: list[tuple[Lot, int]] = []
    left = points
    for consumer in _consumers_of(session, order):
        moved = min(left, consumer.points, sum(spare.values()))
        if moved <= 0:
            break
        moves.append((consumer, _plan_from(others, spare, moved)))
        takes.append((consumer.lot, moved))
        left -= moved
    takes += _plan_from(others, spare, min(left, sum(spare.values())))
    return _StandIn(moves, takes)


def _transfer(
    session: Session,
    wallet: Wallet,
    stand_in: _StandIn,
    *,
    reason: str,
    refund: Refund,
    actor: str | None,
    now: dt.datetime,
) -> None:
    """Write the stand-in's moves: a zero-point ``transfer`` entry per hold or redemption,
    giving its points back to the order's lot and taking as many from the standing-in lots.
    Entries first, then allocations, so that a lot getting points back and giving them up
    again in the caller's entry is never written in between."""
    entries = [
        _post(
            session,
            wallet,
            kind="transfer",
            points=0,
            reference=(consumer.reference_type, consumer.reference_id),
            reason=reason,
            actor=actor,
            now=now,
            refund=refund,
        )
        for consumer, _ in stand_in.moves
    ]
    for entry, (consumer, plan) in zip(entries, stand_in.moves, strict=True):
        _allocate(session, entry, consumer.lot, -sum(take for _, take in plan))
        for lot, take in plan:
            _allocate(session, entry, lot, take)


def _plan_from(lots: list[Lot], spare: dict[int, int], points: int) -> list[tuple[Lot, int]]:
    """Take ``points`` from ``lots`` soonest-expiring first, counting on ``spare`` (what each
    lot has left in this plan, updated) rather than on the lots themselves."""
    views = [rules.LotView(lot.id, spare[lot.id], lot.expires_at) for lot in lots]
    by_id = {lot.id: lot for lot in lots}
    plan = []
    for lot_id, take in rules.plan_consumption(views, points):
        spare[lot_id] -= take
        plan.append((by_id[lot_id], take))
    return plan


@dataclass(frozen=True)
class _Consumer:
    """An open hold or a returnable redemption holding points of an order's lot."""

    reference_type: str  # hold or redemption
    reference_id: str
    lot: Lot
    points: int


def _consumers_of(session: Session, order: Order) -> list[_Consumer]:
    """The open holds (soonest to end first), then the redemptions that could still be given
    back (newest first), that hold points of the order's lots, with how many each holds."""

    def holding(
        model: type[Hold] | type[Redemption], kind: str, where: list[Any], order_by: list[Any]
    ) -> list[tuple[str, str, int, int]]:
        """Per ``model`` row and lot of the order: the points its entry and the transfers for
        it took from the lot, net, in ``order_by`` order (columns of ``model``)."""
        points = func.sum(Allocation.points)
        taken_by = or_(
            Entry.id == model.entry_id,
            and_(
                Entry.kind == "transfer",
                Entry.reference_type == kind,
                Entry.reference_id == model.id,
            ),
        )
        rows = session.execute(
            select(model.id, Allocation.lot_id, points)
            .join(Entry, taken_by)
            .join(Allocation, Allocation.entry_id == Entry.id)
            .join(Lot, Lot.id == Allocation.lot_id)
            .where(model.wallet_id == order.wallet_id, Lot.order_pk == order.id, *where)
            .group_by(model.id, Allocation.lot_id)  # the order_by columns depend on the id
            .having(points > 0)
            .order_by(*order_by, Allocation.lot_id)
        )
        return [(kind, str(ref), int(lot_id), int(held)) for ref, lot_id, held in rows]

    rows = holding(Hold, "hold", [Hold.status == "held"], [Hold.expires_at, Hold.entry_id])
    rows += holding(
        Redemption,
        "redemption",
        [Redemption.returned_at.is_(None), Redemption.hold_id.is_(None)],
        [Redemption.entry_id.desc()],
    )
    lots = {lot.id: lot for lot in session.scalars(select(Lot).where(Lot.order_pk == order.id))}
    return [_Consumer(kind, ref, lots[lot_id], held) for kind, ref, lot_id, held in rows]


def _expired_points(session: Session, order: Order) -> int:
    """Points of the order's lots that expired: in the lot, while held, or while a reward
    claim had them (a cancelled claim whose points had expired gave them back to nobody)."""
    expired = session.scalar(
        select(func.coalesce(func.sum(Allocation.points), 0))
        .join(Lot, Lot.id == Allocation.lot_id)
        .join(Entry, Entry.id == Allocation.entry_id)
        .where(Lot.order_pk == order.id, Entry.kind == "expiry", Allocation.points > 0)
    )
    kept = session.scalar(
        select(func.coalesce(func.sum(Allocation.points), 0))
        .join(Lot, Lot.id == Allocation.lot_id)
        .join(Entry, Entry.id == Allocation.entry_id)
        .join(
            Redemption,
            or_(
                Entry.id == Redemption.entry_id,
                and_(
                    Entry.kind.in_(("transfer", "reversal")),
                    Entry.reference_type == "redemption",
                    Entry.reference_id == Redemption.id,
                ),
            ),
        )
        .where(Lot.order_pk == order.id, Redemption.returned_at.is_not(None))
    )
    return int(expired or 0) + int(kept or 0)


def _points_expired_by_refunds(session: Session, order: Order) -> int:
    points = session.scalar(
        select(func.coalesce(func.sum(Refund.points_expired), 0)).where(Refund.order_pk == order.id)
    )
    return int(points or 0)


# --- redemptions and holds -----------------------------------------------------------------


@retrying
def redeem(
    session: Session,
    *,
    member_id: str,
    points: int,
    reference: str | None = None,
    reason: str | None = None,
    client_id: str | None = None,
    actor: str | None = None,
) -> PointsMove:
    """Spend available points, soonest-expiring first. Locks the member's wallet.

    Raises `InsufficientPointsError`, `MemberNotFoundError`, `MemberNotActiveError`.
    """
    with unit_of_work(session):
        return spend_points(
            session,
            member_id=member_id,
            points=points,
            reference=reference,
            reason=reason,
            client_id=client_id,
            actor=actor,
        )


# --- within another area's unit of work ------------------------------------------------------
# Other areas (rewards, tiers, referrals, community) move points through these. They neither
# open nor commit a transaction: the caller's unit of work does, so the points and the
# caller's own rows are written together or not at all.


def lock_member(session: Session, member_id: str) -> Member:
    """Lock the member's wallet (creating it on first use) for the caller's transaction and
    return the member. Take it first: it orders locks so that operations on one member queue
    rather than deadlock. Raises `MemberNotFoundError`."""
    return _lock_wallet(session, member_id).member


def lock_members(session: Session, member_ids: list[str]) -> dict[str, Member]:
    """Lock the wallets of several members for the caller's transaction, in member-id order
    (the one order in which any operation takes more than one wallet), creating missing
    ones; returns the members by id. An operation that will touch several members' points
    (a referral rewards both sides) takes them all here first, before any other wallet.
    Raises `MemberNotFoundError`."""
    return {
        member_id: locked.member for member_id, locked in _lock_wallets(session, member_ids).items()
    }


def spend_points(
    session: Session,
    *,
    member_id: str,
    points: int,
    reference: str | None = None,
    reason: str | None = None,
    client_id: str | None = None,
    actor: str | None = None,
) -> PointsMove:
    """Redeem ``points`` inside the caller's unit of work (see `redeem`); returns the
    redemption. Raises `InsufficientPointsError`, `MemberNotFoundError`,
    `MemberNotActiveError`."""
    wallet, settings, now = _ready_to_spend(session, member_id, points, actor)
    redemption_id = new_id("red")
    entry = _post(
        session,
        wallet,
        kind="redemption",
        points=-points,
        available=-points,
        counter_account="redemption",
        reference=("redemption", redemption_id),
        external_reference=reference,
        reason=reason,
        actor=actor,
        now=now,
    )
    _consume(session, wallet, entry, points)
    session.add(
        Redemption(
            id=redemption_id,
            wallet_id=wallet.id,
            member_id=member_id,
            client_id=client_id,
            points=points,
            reference=reference,
            reason=reason,
            entry_id=entry.id,
        )
    )
    _touch(wallet, settings, now)
    publish(
        session,
        events.PointsRedeemed(
            occurred_at=now,
            member_id=member_id,
            balance=_balance_after(wallet),
            actor=actor,
            entry_id=entry_public_id(entry),
            points=points,
            reference=reference,
        ),
    )
    return PointsMove(redemption_id, points, Balance.of(wallet))


def return_redemption(
    session: Session, *, redemption_id: str, reason: str | None = None, actor: str | None = None
) -> PointsMove:
    """Give a redemption's points back, inside the caller's unit of work, to exactly the lots
    they came from (with their original expiry). Points whose lot expired meanwhile are not
    given back. Returns the points given back (``points``) and the balance. A redemption is
    returned at most once: a second call raises `RedemptionAlreadyReturnedError`."""
    redemption = session.get(Redemption, redemption_id)
    if redemption is None:
        raise RedemptionNotFoundError(redemption_id)
    wallet = _lock_wallet_by_id(session, redemption.wallet_id)
    session.refresh(redemption)
    if redemption.returned_at is not None:
        raise RedemptionAlreadyReturnedError(redemption_id)
    settings = get_settings(session)
    now = clock.now()
    _settle(session, wallet, settings, now, actor)
    live = _restoration(
        session,
        wallet,
        settings,
        ("redemption", redemption.id),
        redemption.entry_id,
        redemption.points,
        now,
    ).live
    back = sum(points for _, points in live)
    if back:
        entry = _give_back(
            session,
            wallet,
            live,
            lambda keep: _post(
                session,
                wallet,
                kind="reversal",
                points=back,
                available=back,
                counter_account="redemption",
                reference=("redemption", redemption.id),
                reason=reason,
                actor=actor,
                now=now,
                repays_debt=True,
                keep=keep,
            ),
            now,
            actor,
        )
    redemption.returned_at = now
    if back:
        publish(
            session,
            events.PointsReturned(
                occurred_at=now,
                member_id=redemption.member_id,
                balance=_balance_after(wallet),
                actor=actor,
                entry_id=entry_public_id(entry),
                points=back,
                reference=redemption.reference,
            ),
        )
    return PointsMove(redemption.id, back, Balance.of(wallet))


def credit_bonus(
    session: Session,
    *,
    member_id: str,
    points: int,
    reason: str,
    reference: tuple[str, str] | None = None,
    actor: str | None = None,
) -> PointsMove:
    """Credit bonus points (a birthday gift, a badge, a referral reward) inside the caller's
    unit of work: active at once, expiring under the programme's policy, counted as earned.
    ``reference`` is ``(type, id)`` of what earned them. Locks the member's wallet. Raises
    `MemberNotFoundError`, `MemberNotActiveError`."""
    if points <= 0:
        raise ValueError("a bonus credits at least one point")
    locked = _lock_wallet(session, member_id)
    wallet, settings = locked.wallet, locked.settings
    _require_active(locked.member)
    now = clock.now()
    _settle(session, wallet, settings, now, actor)
    entry = _post(
        session,
        wallet,
        kind="bonus",
        points=points,
        available=points,
        earned=points,
        counter_account="issuance",
        reference=reference,
        reason=reason,
        actor=actor,
        now=now,
        repays_debt=True,
    )
    _active_lot(session, wallet, settings, entry, points, now)
    _repay(session, wallet, entry)
    _touch(wallet, settings, now)
    publish(
        session,
        events.BonusCredited(
            occurred_at=now,
            member_id=member_id,
            balance=_balance_after(wallet),
            actor=actor,
            entry_id=entry_public_id(entry),
            points=points,
            reason=reason,
            reference=":".join(reference) if reference else None,
        ),
    )
    return PointsMove(entry_public_id(entry), points, Balance.of(wallet))


@retrying
def place_hold(
    session: Session,
    *,
    member_id: str,
    points: int,
    reference: str | None = None,
    expires_in: int | None = None,
    client_id: str | None = None,
    actor: str | None = None,
) -> HoldResult:
    """Reserve available points for a checkout until captured, released or timed out
    (``expires_in`` seconds, default the programme's hold timeout). Locks the wallet.

    Raises `InsufficientPointsError`, `MemberNotFoundError`, `MemberNotActiveError`.
    """
    with unit_of_work(session):
        wallet, settings, now = _ready_to_spend(session, member_id, points, actor)
        hold_id = new_id("hld")
        entry = _post(
            session,
            wallet,
            kind="hold",
            points=-points,
            available=-points,
            held=points,
            reference=("hold", hold_id),
            external_reference=reference,
            actor=actor,
            now=now,
        )
        _consume(session, wallet, entry, points)
        expires_at = now + dt.timedelta(seconds=expires_in or settings.hold_timeout_seconds)
        hold = Hold(
            id=hold_id,
            wallet_id=wallet.id,
            member_id=member_id,
            client_id=client_id,
            points=points,
            status="held",
            reference=reference,
            entry_id=entry.id,
            expires_at=expires_at,
        )
        session.add(hold)
        _note_due(wallet, expires_at)
        _hold_changed(session, wallet, hold, now, actor)
    return HoldResult(hold, Balance.of(wallet))


@retrying
def capture_hold(
    session: Session, *, hold_id: str, points: int | None = None, actor: str | None = None
) -> HoldResult:
    """Turn a hold into a redemption of ``points`` (default: all it holds); the rest goes
    back to the lots it came from at once. Locks the member's wallet.

    Raises `HoldNotFoundError`, `HoldNotHeldError` (also when its time ran out, in which case
    it is released first), `CaptureExceedsHoldError`, `MemberNotActiveError`.
    """
    refused: HoldNotHeldError | None = None
    with unit_of_work(session):
        hold, wallet = _lock_hold(session, hold_id)
        settings = get_settings(session)
        now = clock.now()
        _settle(session, wallet, settings, now, actor)
        if hold.status != "held":
            refused = HoldNotHeldError(hold.id, hold.status)
        else:
            captured = hold.points if points is None else points
            if captured > hold.points:
                raise CaptureExceedsHoldError(hold.points, captured)
            _require_active(_member(session, hold.member_id))
            redemption_id = new_id("red")
            rest = hold.points - captured
            restoration = (
                _restoration(session, wallet, settings, ("hold", hold.id), hold.entry_id, rest, now)
                if rest
                else _Restoration([], [])
            )
            late = restoration.late_points
            _expire_held(session, wallet, hold, restoration.late, now, actor)
            entry = _give_back(
                session,
                wallet,
                restoration.live,
                lambda keep: _post(
                    session,
                    wallet,
                    kind="capture",
                    points=-captured,
                    held=-(hold.points - late),
                    available=rest - late,
                    counter_account="redemption",
                    reference=("hold", hold.id),
                    external_reference=hold.reference,
                    actor=actor,
                    now=now,
                    repays_debt=True,
                    keep=keep,
                ),
                now,
                actor,
            )
            session.add(
                Redemption(
                    id=redemption_id,
                    wallet_id=wallet.id,
                    member_id=hold.member_id,
                    client_id=hold.client_id,
                    points=captured,
                    reference=hold.reference,
                    entry_id=entry.id,
                    hold_id=hold.id,
                )
            )
            hold.status = "captured"
            hold.captured_points = captured
            hold.redemption_id = redemption_id
            hold.closed_at = now
            _touch(wallet, settings, now)
            _hold_changed(session, wallet, hold, now, actor)
            publish(
                session,
                events.PointsRedeemed(
                    occurred_at=now,
                    member_id=hold.member_id,
                    balance=_balance_after(wallet),
                    actor=actor,
                    entry_id=entry_public_id(entry),
                    points=captured,
                    reference=hold.reference,
                ),
            )
    if refused is not None:
        raise refused
    return HoldResult(hold, Balance.of(wallet))


@retrying
def release_hold(session: Session, *, hold_id: str, actor: str | None = None) -> HoldResult:
    """Give a hold's points back to the lots they came from. Locks the member's wallet.

    Raises `HoldNotFoundError` and `HoldNotHeldError` (captured, released or timed out).
    """
    refused: HoldNotHeldError | None = None
    with unit_of_work(session):
        hold, wallet = _lock_hold(session, hold_id)
        now = clock.now()
        settings = get_settings(session)
        _settle(session, wallet, settings, now, actor)
        if hold.status != "held":
            refused = HoldNotHeldError(hold.id, hold.status)
        else:
            _release(session, wallet, settings, hold, "released", now, actor)
    if refused is not None:
        raise refused
    return HoldResult(hold, Balance.of(wallet))


# --- adjustments ---------------------------------------------------------------------------


@retrying
def adjust(
    session: Session, *, member_id: str, points: int, reason: str, actor: str | None = None
) -> PointsMove:
    """Credit (positive) or debit (negative) points by hand, with a reason. Credits are active
    at once and expire under the programme's policy. Locks the member's wallet.

    Raises `InsufficientPointsError` for a debit above the available points,
    `MemberNotFoundError` and `MemberClosedError`.
    """
    with unit_of_work(session):
        locked = _lock_wallet(session, member_id)
        wallet, settings = locked.wallet, locked.settings
        if locked.member.status == "closed":
            raise MemberClosedError(member_id)
        now = clock.now()
        _settle(session, wallet, settings, now, actor)
        if points < 0 and -points > wallet.available:
            raise InsufficientPointsError(wallet.available, -points)
        entry = _post(
            session,
            wallet,
            kind="adjustment",
            points=points,
            available=points,
            counter_account="adjustment",
            reference=None,
            reason=reason,
            actor=actor,
            now=now,
            repays_debt=points > 0,
        )
        if points > 0:
            _active_lot(session, wallet, settings, entry, points, now)
            _repay(session, wallet, entry)
        else:
            _consume(session, wallet, entry, -points)
        # A manager's adjustment is activity: a goodwill credit to a lapsed member starts a
        # fresh inactivity deadline rather than expiring at the next read.
        _touch(wallet, settings, now)
        publish(
            session,
            events.PointsAdjusted(
                occurred_at=now,
                member_id=member_id,
                balance=_balance_after(wallet),
                actor=actor,
                entry_id=entry_public_id(entry),
                points=points,
                reason=reason,
            ),
        )
    return PointsMove(entry_public_id(entry), points, Balance.of(wallet))


def reverse_bonus(
    session: Session,
    *,
    member_id: str,
    points: int,
    reason: str,
    reference: tuple[str, str] | None = None,
    actor: str | None = None,
) -> PointsMove:
    """Take back ``points`` of a bonus (a referral reward or a badge's points whose earning
    order was refunded) inside the caller's unit of work, under the programme's refund
    policy: from the available points, soonest-expiring first; what is missing is forgiven
    (``within_balance``) or becomes debt (``allow_negative``). Returns the points actually
    taken back (as ``points``, negative) and the balance. The bonus no longer counts as
    earned (tiers count earned points), even when nothing could be taken back. Locks the
    member's wallet."""
    if points <= 0:
        raise ValueError("a clawback takes at least one point")
    locked = _lock_wallet(session, member_id)
    wallet, settings = locked.wallet, locked.settings
    now = clock.now()
    _settle(session, wallet, settings, now, actor)
    taken = min(points, max(wallet.available, 0))
    debt = points - taken if settings.refund_policy == "allow_negative" else 0
    earned = min(points, wallet.lifetime_earned)
    if taken + debt == 0 and earned == 0:
        return PointsMove("", 0, Balance.of(wallet))
    missing = points - taken - debt
    entry = _post(
        session,
        wallet,
        kind="reversal",
        points=-(taken + debt),
        available=-(taken + debt),
        debt=debt,
        earned=-earned,
        counter_account="issuance",
        reference=reference,
        reason=reason + (f"; {missing} points already spent" if missing else ""),
        actor=actor,
        now=now,
    )
    if taken:
        _consume(session, wallet, entry, taken)
    publish(
        session,
        events.PointsTakenBack(
            occurred_at=now,
            member_id=member_id,
            balance=_balance_after(wallet),
            actor=actor,
            entry_id=entry_public_id(entry),
            points=-(taken + debt),
            reason=reason,
            reference=":".join(reference) if reference else None,
        ),
    )
    return PointsMove(entry_public_id(entry), -(taken + debt), Balance.of(wallet))


# --- due work ------------------------------------------------------------------------------


@retrying
def settle_wallet(session: Session, *, wallet_id: str, actor: str | None = None) -> int:
    """Do what is due on one wallet now; returns the number of entries written."""
    with unit_of_work(session):
        wallet = _lock_wallet_by_id(session, wallet_id)
        return _settle(session, wallet, get_settings(session), clock.now(), actor)


@retrying
def settle_wallets(
    session: Session,
    *,
    member_ids: list[str],
    actor: str | None = None,
    skip_locked: bool = False,
) -> int:
    """Do what is due now on these members' wallets, in one unit of work that locks them in
    member-id order (with ``skip_locked``, wallets other transactions hold are left to
    them); returns the number of entries written."""
    with unit_of_work(session):
        locked = _lock_wallets(session, list(member_ids), skip_locked=skip_locked)
        now = clock.now()
        return sum(
            _settle(session, item.wallet, item.settings, now, actor) for item in locked.values()
        )


def due_wallet_count(session: Session) -> int:
    """How many wallets have something due now (for progress displays)."""
    count = session.scalar(
        select(func.count()).select_from(Wallet).where(Wallet.next_due_at <= clock.now())
    )
    return int(count or 0)


@retrying
def settle_due_batch(session: Session, *, batch_size: int = 50, actor: str = "jobs") -> int:
    """Settle up to ``batch_size`` wallets whose work is due, in one short transaction.

    Wallets locked by a request or another runner are skipped (``FOR UPDATE SKIP LOCKED``),
    so several runners share the work and each lot is activated or expired once. Returns the
    number of wallets settled (0 when nothing is due).
    """
    with unit_of_work(session):
        now = clock.now()
        due = (
            select(Wallet.id)
            .where(Wallet.next_due_at <= now)
            .order_by(Wallet.next_due_at)
            .limit(batch_size)
        )
        # Locked in member-id order, the order of every multi-wallet operation; nothing in
        # a batch locks another wallet (follow-ups on other members run after the commit).
        query = select(Wallet).where(Wallet.id.in_(due)).order_by(Wallet.member_id)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        wallets = list(session.scalars(query))
        settings = get_settings(session)
        for wallet in wallets:
            _settle(session, wallet, settings, now, actor)
    return len(wallets)


# --- private helpers -----------------------------------------------------------------------


def entry_public_id(entry: Entry) -> str:
    return f"ent_{entry.id}"


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _member(session: Session, member_id: str) -> Member:
    return members_service.get_member(session, member_id)


def _require_active(member: Member) -> None:
    if member.status != "active":
        raise MemberNotActiveError(member.id, member.status)


@dataclass(frozen=True)
class _Locked:
    """What a change to a member's points needs, read in the round trip that locks the
    wallet: the wallet, the member and the programme's settings."""

    wallet: Wallet
    member: Member
    settings: ProgramSettings


def _lock_wallet(session: Session, member_id: str) -> _Locked:
    """Lock the member's wallet for this transaction (creating it on first use) and read the
    member and the settings with it. Raises `MemberNotFoundError`.
    """
    return _lock_wallets(session, [member_id])[member_id]


def _lock_wallets(
    session: Session, member_ids: Sequence[str | None], *, skip_locked: bool = False
) -> dict[str, _Locked]:
    """Lock the wallets of these members (``None`` is skipped), creating missing ones, in
    member-id order: every operation that takes more than one wallet takes them in this
    order, so two of them never wait on each other in a circle. Reads the members and the
    settings in the same round trip. With ``skip_locked`` (reads), wallets that other
    transactions hold are left out rather than waited for. Raises `MemberNotFoundError`."""
    ids = sorted({member_id for member_id in member_ids if member_id is not None})
    query = (
        select(Wallet, Member, ProgramSettings)
        .join(Member, Member.id == Wallet.member_id)
        .join(ProgramSettings, ProgramSettings.id == 1)
        .where(Wallet.member_id.in_(ids) if len(ids) > 1 else Wallet.member_id == ids[0])
        .order_by(Wallet.member_id)
        .with_for_update(of=Wallet, skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )
    rows = {row[0].member_id: _Locked(*row) for row in session.execute(query)}
    if skip_locked:
        return rows
    missing = [member_id for member_id in ids if member_id not in rows]
    if missing:
        for member_id in missing:
            _member(session, member_id)  # raises when there is no such member
        now = clock.now()
        insert = dialect_insert(session)
        session.execute(
            insert(Wallet)
            .values(
                [
                    {
                        "id": new_id("wal"),
                        "member_id": member_id,
                        "available": 0,
                        "pending": 0,
                        "held": 0,
                        "debt": 0,
                        "lifetime_earned": 0,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for member_id in missing
                ]
            )
            .on_conflict_do_nothing()
        )
        rows = {row[0].member_id: _Locked(*row) for row in session.execute(query)}
        if len(rows) != len(ids):  # no settings row: a database from before the defaults
            raise AssertionError("the program_settings row is missing; run loyalty db upgrade")
    return rows


def _ready_to_spend(
    session: Session, member_id: str, points: int, actor: str | None
) -> tuple[Wallet, ProgramSettings, dt.datetime]:
    """Lock an active member's wallet, settle what is due, and check it holds ``points``."""
    locked = _lock_wallet(session, member_id)
    _require_active(locked.member)
    now = clock.now()
    _settle(session, locked.wallet, locked.settings, now, actor)
    if points > locked.wallet.available:
        raise InsufficientPointsError(locked.wallet.available, points)
    return locked.wallet, locked.settings, now


def _lock_wallet_by_id(session: Session, wallet_id: str) -> Wallet:
    wallet = session.scalar(
        select(Wallet)
        .where(Wallet.id == wallet_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert wallet is not None
    return wallet


def _lock_hold(session: Session, hold_id: str) -> tuple[Hold, Wallet]:
    hold = session.get(Hold, hold_id)
    if hold is None:
        raise HoldNotFoundError(hold_id)
    wallet = _lock_wallet_by_id(session, hold.wallet_id)
    session.refresh(hold)  # read again under the wallet's lock
    return hold, wallet


def _post(
    session: Session,
    wallet: Wallet,
    *,
    kind: str,
    points: int,
    available: int = 0,
    pending: int = 0,
    held: int = 0,
    debt: int = 0,
    earned: int = 0,
    counter_account: str | None = None,
    reference: tuple[str, str] | None,
    external_reference: str | None = None,
    reason: str | None = None,
    actor: str | None,
    now: dt.datetime,
    repays_debt: bool = False,
    keep: int = 0,
    refund: Refund | None = None,
) -> Entry:
    """Write one entry and move the wallet's cached balances with it.

    An entry that makes points spendable (``repays_debt``) repays the wallet's debt from them
    in the same entry, all but ``keep`` of them (taken at once by a refund's shortfall); the
    caller then takes the repaid points from the lots with `_repay`.
    """
    repay = 0
    if repays_debt and wallet.debt:
        repay = min(wallet.debt, max(0, wallet.available + wallet.debt + available - keep))
        debt -= repay
        if repay:
            reason = (reason + "; " if reason else "") + f"repaid {repay} points of debt"
    wallet.available += available
    wallet.pending += pending
    wallet.held += held
    wallet.debt += debt
    wallet.lifetime_earned += earned
    wallet.updated_at = now
    entry = Entry(
        wallet_id=wallet.id,
        member_id=wallet.member_id,
        kind=kind,
        points=points,
        available_delta=available,
        pending_delta=pending,
        held_delta=held,
        debt_delta=debt,
        earned_delta=earned,
        counter_account=counter_account,
        counter_amount=-(available + pending + held),
        reference_type=reference[0] if reference else None,
        reference_id=reference[1] if reference else None,
        external_reference=external_reference,
        reason=reason,
        actor=actor,
        refund_pk=refund.id if refund is not None else None,
        balance_available=wallet.available,
        balance_pending=wallet.pending,
        balance_held=wallet.held,
        created_at=now,
    )
    session.add(entry)
    session.flush()
    return entry


def _repay(session: Session, wallet: Wallet, entry: Entry) -> None:
    """Take the debt an entry repaid from the lots, once its points are in them.

    Debt that refunds left (``allow_negative``) is repaid first, oldest refund first, with
    the refunded order's own points where they are back in its lots; else the holds and
    redemptions that still hold the order's points hold the repaying points instead, and
    the order's points are taken. So a refunded order never keeps points that repaid debt
    stood in for. Other debt (clawbacks) is repaid from the lots soonest-expiring first."""
    repaid = -entry.debt_delta
    if repaid <= 0:
        return
    claims = session.scalars(
        select(Refund)
        .join(Order, Order.id == Refund.order_pk)
        .where(Order.wallet_id == wallet.id, Refund.debt > 0, Refund.outstanding > 0)
        .order_by(Refund.entry_id)
    ).all()
    for claim in claims:
        if repaid <= 0:
            break
        owed = min(repaid, claim.outstanding)
        claim.outstanding -= owed
        repaid -= owed
        order = session.get(Order, claim.order_pk)
        assert order is not None
        own = [lot for lot in _spendable_lots(session, wallet) if lot.order_pk == order.id]
        takes = _plan_from(own, {lot.id: lot.remaining for lot in own}, owed)
        owed -= sum(take for _, take in takes)
        stand_in = _stand_in(session, wallet, order, owed) if owed else _StandIn([], [])
        _transfer(
            session,
            wallet,
            stand_in,
            reason=f"Debt of a refund of order {order.order_id} repaid: these points held in "
            "place of the order's",
            refund=claim,
            actor=entry.actor,
            now=entry.created_at,
        )
        for lot, take in takes + stand_in.takes:
            _allocate(session, entry, lot, take)
    if repaid:
        _consume(session, wallet, entry, repaid)


def _owed_back(
    session: Session, live: list[tuple[Lot, int]]
) -> list[tuple[Refund, list[tuple[Lot, int]]]]:
    """Of the points about to go back to lots (``live``), those that refunds of the lots'
    orders are still short of (``within_balance``), oldest refund first, with the lots they
    will be taken from: a refund's shortfall is not forgiven while the order's own points
    come back, and it comes before any other use of them (debt included)."""
    back: dict[str, int] = {}
    room: dict[int, int] = {}
    for lot, points in live:
        if lot.order_pk is not None:
            back[lot.order_pk] = back.get(lot.order_pk, 0) + points
            room[lot.id] = lot.remaining + points
    if not back:
        return []
    owed: list[tuple[Refund, list[tuple[Lot, int]]]] = []
    for refund in session.scalars(
        select(Refund)
        .where(Refund.order_pk.in_(back), Refund.debt == 0, Refund.outstanding > 0)
        .order_by(Refund.entry_id)
    ):
        lots = [lot for lot, _ in live if lot.order_pk == refund.order_pk]
        plan = _plan_from(lots, room, min(refund.outstanding, back[refund.order_pk]))
        if plan:
            back[refund.order_pk] -= sum(take for _, take in plan)
            owed.append((refund, plan))
    return owed


def _give_back(
    session: Session,
    wallet: Wallet,
    live: list[tuple[Lot, int]],
    post: Callable[[int], Entry],
    now: dt.datetime,
    actor: str | None,
) -> Entry:
    """Give points of a hold or redemption back to the ``live`` lots they came from: ``post``
    writes the crediting entry (told how many of the points refunds take back at once, which
    repay no debt), then the lots get their points, refunds still short take theirs, and
    the rest repays debt."""
    owed = _owed_back(session, live)
    entry = post(sum(take for _, plan in owed for _, take in plan))
    _restore(session, wallet, entry, live)
    for refund, plan in owed:
        points = sum(take for _, take in plan)
        order = session.get(Order, refund.order_pk)
        assert order is not None
        reclaim = _post(
            session,
            wallet,
            kind="reversal",
            points=-points,
            available=-points,
            counter_account="issuance",
            reference=("refund", refund.refund_id),
            reason=f"Points of refunded order {order.order_id} came back: taken for the "
            "refund's shortfall",
            actor=actor,
            now=now,
            refund=refund,
        )
        for lot, take in plan:
            _allocate(session, reclaim, lot, take)
        refund.outstanding -= points
    _repay(session, wallet, entry)
    return entry


def _new_lot(
    session: Session,
    wallet: Wallet,
    entry: Entry,
    points: int,
    *,
    activates_at: dt.datetime,
    active: bool,
    expires_at: dt.datetime | None,
    order: Order | None,
    now: dt.datetime,
) -> Lot:
    lot = Lot(
        wallet_id=wallet.id,
        entry_id=entry.id,
        order_pk=order.id if order else None,
        amount=points,
        remaining=points,
        activates_at=activates_at,
        activated_at=now if active else None,
        expires_at=expires_at,
        created_at=now,
    )
    session.add(lot)
    session.flush()
    _note_due(wallet, expires_at if active else activates_at)
    return lot


def _active_lot(
    session: Session,
    wallet: Wallet,
    settings: ProgramSettings,
    entry: Entry,
    points: int,
    now: dt.datetime,
) -> Lot:
    """A lot of points spendable at once (an adjustment, a bonus), expiring by the policy."""
    return _new_lot(
        session,
        wallet,
        entry,
        points,
        activates_at=now,
        active=True,
        expires_at=_expiry(settings, now),
        order=None,
        now=now,
    )


def _note_due(wallet: Wallet, moment: dt.datetime | None) -> None:
    if moment is not None and (wallet.next_due_at is None or moment < wallet.next_due_at):
        wallet.next_due_at = moment


def _allocate(session: Session, entry: Entry, lot: Lot, points: int) -> None:
    """Record that ``entry`` took ``points`` from ``lot`` (negative: gave them back)."""
    lot.remaining -= points
    session.add(Allocation(entry_id=entry.id, lot_id=lot.id, points=points))


def _spendable_lots(session: Session, wallet: Wallet) -> list[Lot]:
    return list(
        session.scalars(
            select(Lot).where(
                Lot.wallet_id == wallet.id,
                Lot.remaining > 0,
                Lot.activated_at.is_not(None),
                Lot.expired_at.is_(None),
            )
        )
    )


def _views(lots: list[Lot]) -> list[rules.LotView]:
    return [rules.LotView(lot.id, lot.remaining, lot.expires_at) for lot in lots]


def _consume(session: Session, wallet: Wallet, entry: Entry, points: int) -> None:
    """Take ``points`` from the wallet's active lots, soonest-expiring first."""
    lots = {lot.id: lot for lot in _spendable_lots(session, wallet)}
    plan = rules.plan_consumption(_views(list(lots.values())), points)
    if sum(take for _, take in plan) != points:
        raise AssertionError("the lots do not hold the available balance")
    for lot_id, take in plan:
        _allocate(session, entry, lots[lot_id], take)


@dataclass(frozen=True)
class _Restoration:
    """Where points of a debit go back: ``live`` lots get them, ``late`` ones expired
    meanwhile (their date passed, or all points expired for inactivity) and do not."""

    live: list[tuple[Lot, int]]
    late: list[tuple[Lot, int]]

    @property
    def late_points(self) -> int:
        return sum(points for _, points in self.late)


def _restoration(
    session: Session,
    wallet: Wallet,
    settings: ProgramSettings,
    reference: tuple[str, str],
    debit_entry_id: int,
    points: int,
    now: dt.datetime,
) -> _Restoration:
    """Which lots get ``points`` of a debit (a hold, a redemption) back: exactly the lots it
    holds them from (taken by its entry, or moved there by transfers for it), last taken
    first. Points whose lot expired meanwhile are not given back."""
    transfers = select(Entry.id).where(
        Entry.kind == "transfer",
        Entry.reference_type == reference[0],
        Entry.reference_id == reference[1],
        Entry.wallet_id == wallet.id,
    )
    taken: dict[int, int] = {}
    for lot_id, took in session.execute(
        select(Allocation.lot_id, Allocation.points)
        .where(or_(Allocation.entry_id == debit_entry_id, Allocation.entry_id.in_(transfers)))
        .order_by(Allocation.id)
    ):
        taken[lot_id] = taken.get(lot_id, 0) + took
    plan = rules.plan_restoration([(i, p) for i, p in taken.items() if p > 0], points)
    lots = {
        lot.id: lot
        for lot in session.scalars(
            select(Lot)
            .where(Lot.id.in_([i for i, _ in plan]))
            .execution_options(populate_existing=True)
        )
    }
    lapsed = _lapsed(wallet, settings, now)
    live: list[tuple[Lot, int]] = []
    late: list[tuple[Lot, int]] = []
    for lot_id, back in plan:
        lot = lots[lot_id]
        expired = lot.expired_at is not None or (
            lot.expires_at is not None and lot.expires_at <= now
        )
        (late if expired or lapsed else live).append((lot, back))
    return _Restoration(live, late)


def _restore(session: Session, wallet: Wallet, entry: Entry, live: list[tuple[Lot, int]]) -> None:
    for lot, back in live:
        _allocate(session, entry, lot, -back)
        _note_due(wallet, lot.expires_at)


def _expire_held(
    session: Session,
    wallet: Wallet,
    hold: Hold,
    late: list[tuple[Lot, int]],
    now: dt.datetime,
    actor: str | None,
) -> None:
    """Held points whose lots expired while they were held expire straight from the hold.
    The entry names each lot they expire from (it gives the points back to the lot and takes
    them again, so the lot's remaining does not move)."""
    points = sum(p for _, p in late)
    if not points:
        return
    entry = _post(
        session,
        wallet,
        kind="expiry",
        points=-points,
        held=-points,
        counter_account="expiry",
        reference=("hold", hold.id),
        reason="Held points reached their expiry date before the hold ended",
        actor=actor,
        now=now,
    )
    for lot, back in late:
        _allocate(session, entry, lot, -back)
        _allocate(session, entry, lot, back)
    _expired(session, wallet, points, "expiry_date", now, actor)


def _expired(
    session: Session, wallet: Wallet, points: int, reason: str, now: dt.datetime, actor: str | None
) -> None:
    publish(
        session,
        events.PointsExpired(
            occurred_at=now,
            member_id=wallet.member_id,
            balance=_balance_after(wallet),
            actor=actor,
            points=points,
            reason=reason,
        ),
    )


def _release(
    session: Session,
    wallet: Wallet,
    settings: ProgramSettings,
    hold: Hold,
    status: str,
    now: dt.datetime,
    actor: str | None,
) -> None:
    restoration = _restoration(
        session, wallet, settings, ("hold", hold.id), hold.entry_id, hold.points, now
    )
    _expire_held(session, wallet, hold, restoration.late, now, actor)
    back = hold.points - restoration.late_points
    if back:
        _give_back(
            session,
            wallet,
            restoration.live,
            lambda keep: _post(
                session,
                wallet,
                kind="release",
                points=back,
                held=-back,
                available=back,
                reference=("hold", hold.id),
                external_reference=hold.reference,
                reason="Hold timed out" if status == "expired" else None,
                actor=actor,
                now=now,
                repays_debt=True,
                keep=keep,
            ),
            now,
            actor,
        )
    hold.status = status
    hold.closed_at = now
    _hold_changed(session, wallet, hold, now, actor)


def _hold_changed(
    session: Session, wallet: Wallet, hold: Hold, now: dt.datetime, actor: str | None
) -> None:
    publish(
        session,
        events.HoldChanged(
            occurred_at=now,
            member_id=hold.member_id,
            balance=_balance_after(wallet),
            actor=actor,
            hold_id=hold.id,
            points=hold.points,
            captured_points=hold.captured_points,
            status=hold.status,
        ),
    )


def _touch(wallet: Wallet, settings: ProgramSettings, now: dt.datetime) -> None:
    """The member was active (earned or spent): under the inactivity policy, points now
    expire that much later."""
    wallet.last_activity_at = now
    if settings.expiry_policy == "inactivity":
        _note_due(wallet, _deadline(settings, now))


def _last_activity(wallet: Wallet) -> dt.datetime:
    """When the member last earned or spent; a wallet only ever credited by hand counts from
    its creation."""
    return wallet.last_activity_at or wallet.created_at


def _lapsed(wallet: Wallet, settings: ProgramSettings, now: dt.datetime) -> bool:
    """Whether, under the inactivity policy, the member's deadline has passed: all their
    points have expired (or expire when next settled)."""
    return (
        settings.expiry_policy == "inactivity"
        and _deadline(settings, _last_activity(wallet)) <= now
    )


def _is_due(wallet: Wallet, settings: ProgramSettings, now: dt.datetime) -> bool:
    return wallet.next_due_at is not None and wallet.next_due_at <= now


def _settle(
    session: Session,
    wallet: Wallet,
    settings: ProgramSettings,
    now: dt.datetime,
    actor: str | None,
) -> int:
    """Do the wallet's due work: release timed-out holds, activate pending lots whose return
    window has passed, expire lots (by date, or all of them after inactivity). The wallet
    must be locked. Returns the number of entries written."""
    if not _is_due(wallet, settings, now):
        return 0
    written = 0
    for hold in session.scalars(
        select(Hold)
        .where(Hold.wallet_id == wallet.id, Hold.status == "held", Hold.expires_at <= now)
        .order_by(Hold.expires_at, Hold.entry_id)
    ):
        _release(session, wallet, settings, hold, "expired", now, actor)
        written += 1
    for lot in session.scalars(
        select(Lot)
        .where(Lot.wallet_id == wallet.id, Lot.activated_at.is_(None), Lot.activates_at <= now)
        .order_by(Lot.activates_at, Lot.id)
    ):
        lot.activated_at = now
        order_ref = (
            session.scalar(select(Order.order_id).where(Order.id == lot.order_pk))
            if lot.order_pk is not None
            else None
        )
        if lot.remaining:
            entry = _post(
                session,
                wallet,
                kind="activation",
                points=lot.remaining,
                pending=-lot.remaining,
                available=lot.remaining,
                reference=("order", order_ref) if order_ref else None,
                reason="Return window over",
                actor=actor,
                now=now,
                repays_debt=True,
            )
            _repay(session, wallet, entry)
            written += 1
        if lot.order_pk is not None and order_ref is not None:
            publish(
                session,
                events.OrderActivated(
                    occurred_at=now,
                    member_id=wallet.member_id,
                    balance=_balance_after(wallet),
                    actor=actor,
                    order_pk=lot.order_pk,
                    order_id=order_ref,
                    points=lot.remaining,
                ),
            )
    inactive = _lapsed(wallet, settings, now)
    expiring = select(Lot).where(
        Lot.wallet_id == wallet.id,
        Lot.activated_at.is_not(None),
        Lot.expired_at.is_(None),
        Lot.remaining > 0,
    )
    if not inactive:
        expiring = expiring.where(Lot.expires_at <= now)
    expired = 0
    for lot in session.scalars(expiring.order_by(Lot.expires_at, Lot.id)):
        points = lot.remaining
        expired += points
        entry = _post(
            session,
            wallet,
            kind="expiry",
            points=-points,
            available=-points,
            counter_account="expiry",
            reference=("lot", str(lot.id)),
            reason="Inactivity" if inactive else "Points reached their expiry date",
            actor=actor,
            now=now,
        )
        _allocate(session, entry, lot, points)
        lot.expired_at = now
        written += 1
    if expired:
        _expired(session, wallet, expired, "inactivity" if inactive else "expiry_date", now, actor)
    if inactive:
        # Spent or held points of these lots that come back later (a released hold, a
        # cancelled claim) come back to expired lots: they expire too.
        for lot in session.scalars(
            select(Lot).where(
                Lot.wallet_id == wallet.id,
                Lot.activated_at.is_not(None),
                Lot.expired_at.is_(None),
            )
        ):
            lot.expired_at = now
    wallet.next_due_at = _next_due(session, wallet, settings)
    return written


def _next_due(session: Session, wallet: Wallet, settings: ProgramSettings) -> dt.datetime | None:
    candidates = [
        session.scalar(
            select(func.min(Hold.expires_at)).where(
                Hold.wallet_id == wallet.id, Hold.status == "held"
            )
        ),
        session.scalar(
            select(func.min(Lot.activates_at)).where(
                Lot.wallet_id == wallet.id, Lot.activated_at.is_(None)
            )
        ),
        session.scalar(
            select(func.min(Lot.expires_at)).where(
                Lot.wallet_id == wallet.id,
                Lot.activated_at.is_not(None),
                Lot.expired_at.is_(None),
                Lot.remaining > 0,
            )
        ),
    ]
    if settings.expiry_policy == "inactivity" and (
        wallet.available + wallet.debt > 0
        or wallet.held > 0
        or session.scalar(
            select(Lot.id)
            .where(
                Lot.wallet_id == wallet.id,
                Lot.activated_at.is_not(None),
                Lot.expired_at.is_(None),
            )
            .limit(1)
        )
        is not None
    ):
        # Points spent or held from lots that are not yet expired could come back.
        candidates.append(_deadline(settings, _last_activity(wallet)))
    moments = [_aware(m) for m in candidates if m is not None]
    return min(moments) if moments else None


def _aware(moment: dt.datetime) -> dt.datetime:
    """Aggregates bypass the column type on SQLite, so a MIN() may come back naive."""
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
