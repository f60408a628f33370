"""Orders and refunds: accrual for an order, and refunds that take back the order's share of
points (from its own lots, then from points standing in for those spent or held), with the
natural keys (``order_id``, ``refund_id`` per channel) that make both idempotent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from loyalty import clock
from loyalty.auth.rules import DEFAULT_CHANNEL
from loyalty.bus import publish
from loyalty.db import constraint_name, new_id, retrying, unit_of_work
from loyalty.errors import InvalidFieldError, LoyaltyError
from loyalty.ledger import events, ports, rules
from loyalty.ledger.errors import (
    EventInFutureError,
    EventTooOldError,
    OrderConflictError,
    OrderInFutureError,
    OrderNotFoundError,
    OrderTooOldError,
    RefundConflictError,
    RefundExceedsOrderError,
)
from loyalty.ledger.models import (
    Allocation,
    Entry,
    Lot,
    Order,
    Redemption,
    Refund,
    Wallet,
)
from loyalty.ledger.reporting import order_totals_by_currency
from loyalty.ledger.service._core import (
    Balance,
    Settings,
    _allocate,
    _count_order,
    _entry_values,
    _expiry,
    _lock_wallet_for_order,
    _lock_wallets,
    _note_due,
    _post,
    _require_active,
    _told,
    _touch,
    _written,
)
from loyalty.ledger.service._giveback import _repay, _stand_in, _StandIn, _transfer
from loyalty.ledger.service.due import _settle
from loyalty.ledger.service.settings import get_settings
from loyalty.members.models import Member

# No single order earns more (it keeps every balance far inside 64-bit integers).
MAX_ORDER_POINTS = 10**12


@dataclass(frozen=True)
class Replayable:
    """The result of a call with a natural key: ``created`` False when it is a replay."""

    body: dict[str, Any]
    created: bool


# Built once: the accrual sends it every time (building costs about as much as sending).
_ORDER_BY_KEY = select(Order).where(
    Order.channel_id == bindparam("channel_id"), Order.order_id == bindparam("order_id")
)

# How far ahead of the server's clock an order or event may be dated (clock skew).
FUTURE_TOLERANCE = dt.timedelta(minutes=5)


def check_age(
    settings: Settings,
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
        locked, absent = _lock_wallet_for_order(session, member_id, channel_id, order_id, placed_at)
        wallet, settings = locked.wallet, locked.settings
        # Unless the lock's statement could tell, read after the lock, in a statement of its
        # own: a concurrent report of this order that held the lock has committed by now.
        existing = None
        if not absent:
            existing = session.scalar(
                _ORDER_BY_KEY, {"channel_id": channel_id, "order_id": order_id}
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
        _count_order(wallet, total, currency, 1 if total > 0 else 0)
        wallet.updated_at = now
        _touch(wallet, settings, now)
        if points > 0:
            _note_due(wallet, activates_at if pending else expires_at)
        # The common accrual (points, no debt to repay) writes its rows in one statement on
        # PostgreSQL; the rest goes through the ORM.
        at_once = _writes_at_once(session) and (points == 0 or not wallet.debt)
        breakdown = [component.as_dict() for component in quote.components]
        order_row: dict[str, Any] = {
            "id": new_id("ord"),
            "channel_id": channel_id,
            "client_id": client_id,
            "order_id": order_id,
            "member_id": member_id,
            "wallet_id": wallet.id,
            "total": total,
            "currency": currency.upper(),
            "items": items,
            "placed_at": placed,
            "points": points,
            "points_reversed": 0,
            "amount_refunded": 0,
            "activates_at": activates_at,
            "breakdown": breakdown,
            "request_hash": fingerprint,
            "created_at": now,
        }
        entry_row = None
        if points > 0:
            entry_row = _entry_values(
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
        order_row["response"] = {
            "order_id": order_id,
            "member_id": member_id,
            "points": points,
            "status": "pending" if pending else "active",
            "activates_at": _timestamp(activates_at),
            "balance": Balance.of(wallet).as_dict(),
            "breakdown": breakdown,
            "description": quote.describe(),
        }
        lot_row = {
            "wallet_id": wallet.id,
            "order_pk": order_row["id"],
            "amount": points,
            "remaining": points,
            "activates_at": activates_at,
            "activated_at": None if pending else now,
            "expires_at": expires_at,
            "expired_at": None,
            "created_at": now,
        }
        # Spend and order counts grow with every order, whatever it earned.
        recorded = events.OrderRecorded(
            **_told(wallet, now, actor),
            order_pk=order_row["id"],
            order_id=order_id,
            channel_id=channel_id,
            points=points,
            pending=pending,
            activates_at=activates_at,
        )
        if at_once:
            _write_at_once(session, wallet, entry_row, order_row, lot_row, recorded)
        else:
            _write_with_orm(session, wallet, entry_row, order_row, lot_row)
        publish(session, recorded)
    return Replayable(order_row["response"], created=True)


def _writes_at_once(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# What an accrual changes in its wallet row (all of it but the keys and created_at).
_WALLET_STATE = (
    "available",
    "pending",
    "held",
    "debt",
    "lifetime_earned",
    "spend",
    "order_count",
    "last_activity_at",
    "next_due_at",
    "updated_at",
)


def _write_at_once(
    session: Session,
    wallet: Wallet,
    entry_row: dict[str, Any] | None,
    order_row: dict[str, Any],
    lot_row: dict[str, Any],
    recorded: events.OrderRecorded,
) -> None:
    """Write the accrual's entry, order and lot (only the order when it earned nothing) and
    the wallet's new state in one round trip (PostgreSQL), instead of up to four through the
    ORM, with the rows the riders write for the order (`ports.Rider`); the wallet object
    then counts as saved."""
    state = {name: getattr(wallet, name) for name in _WALLET_STATE}
    parameters: dict[str, Any] = {}
    rows = [("o", order_row), ("w", state | {"id": wallet.id})]
    if entry_row is not None:
        rows += [("e", entry_row), ("l", lot_row)]
    for prefix, row in rows:
        for column, value in row.items():
            name = _bind_name(prefix, column)
            if parameters.setdefault(name, value) != value:
                raise AssertionError(f"{prefix}.{column} differs from {name}")
    riders = ports.accrual_riders.all
    for rider in riders:
        parameters |= rider.parameters(session, recorded)
    statement = _accrual_statement(earned=entry_row is not None, riders=riders)
    with session.no_autoflush:  # the wallet's changes go in this statement, not a flush
        session.execute(statement, parameters)
    for name, value in state.items():
        set_committed_value(wallet, name, value)


# Values the accrual's rows share are sent once: psycopg converts a statement's placeholders
# once and keeps the result only for statements of at most 50 parameters (49 here with the
# outbox row and the wallet's spend and order count, 57 before).
_SHARED = {
    ("e", "wallet_id"): "s_wallet_id",
    ("o", "wallet_id"): "s_wallet_id",
    ("l", "wallet_id"): "s_wallet_id",
    ("w", "id"): "s_wallet_id",
    ("e", "member_id"): ports.ACCRUAL_MEMBER,
    ("o", "member_id"): ports.ACCRUAL_MEMBER,
    ("e", "created_at"): ports.ACCRUAL_NOW,
    ("o", "created_at"): ports.ACCRUAL_NOW,
    ("l", "created_at"): ports.ACCRUAL_NOW,
    ("w", "updated_at"): ports.ACCRUAL_NOW,
    ("w", "last_activity_at"): ports.ACCRUAL_NOW,
    ("o", "id"): "s_order_pk",
    ("l", "order_pk"): "s_order_pk",
    ("o", "activates_at"): "s_activates_at",
    ("l", "activates_at"): "s_activates_at",
    ("o", "points"): "s_points",
    ("l", "amount"): "s_points",
    ("l", "remaining"): "s_points",
}


def _bind_name(prefix: str, column: str) -> str:
    """The parameter carrying a column's value: ``e_``, ``o_``, ``l_`` and ``w_`` for the
    entry, the order, the lot and the wallet, ``s_`` for a value they share (never a
    column's own name: SQLAlchemy would add the column to the UPDATE's SET)."""
    return _SHARED.get((prefix, column)) or f"{prefix}_{column}"


@cache
def _accrual_statement(*, earned: bool, riders: tuple[ports.Rider, ...] = ()) -> Any:
    """The entry (its id from the sequence), the order and the lot naming it, the wallet's
    update and the riders' rows, as data-modifying WITH clauses of one statement (without
    ``earned``: the order, the wallet's update and the riders' rows). Foreign keys are
    checked at the statement's end, when all the rows are there."""
    entries, orders, lots, wallets = (
        cast(Table, model.__table__) for model in (Entry, Order, Lot, Wallet)
    )

    def binds(table: Any, prefix: str, names: Any) -> dict[str, Any]:
        return {
            name: bindparam(_bind_name(prefix, name), type_=table.c[name].type) for name in names
        }

    wallet = (
        update(wallets)
        .where(wallets.c.id == bindparam(_bind_name("w", "id"), type_=wallets.c.id.type))
        .values(binds(wallets, "w", _WALLET_STATE))
        .cte("wallet_update")
    )
    riding = [rider.clause().cte(f"rider_{rider.name}") for rider in riders]
    returning = [column for rider in riders for column in rider.returning()]
    order_columns = [c.name for c in orders.columns if c.name != "entry_id"]
    if not earned:
        statement = insert(orders).values(binds(orders, "o", order_columns))
        if returning:
            statement = statement.returning(*returning)
        return statement.add_cte(wallet, *riding)
    entry_columns = [c.name for c in entries.columns if c.name != "id"]
    entry = insert(entries).values(binds(entries, "e", entry_columns)).returning(entries.c.id)
    entry_cte = entry.cte("new_entry")
    entry_id = select(entry_cte.c.id).scalar_subquery()
    order = insert(orders).values(**binds(orders, "o", order_columns), entry_id=entry_id)
    lot_columns = [c.name for c in lots.columns if c.name not in ("id", "entry_id")]
    lot = insert(lots).values(**binds(lots, "l", lot_columns), entry_id=entry_id)
    return select(entry_cte.c.id, *returning).add_cte(
        order.cte("new_order"), lot.cte("new_lot"), wallet, *riding
    )


def _write_with_orm(
    session: Session,
    wallet: Wallet,
    entry_row: dict[str, Any] | None,
    order_row: dict[str, Any],
    lot_row: dict[str, Any],
) -> None:
    """The accrual's rows through the ORM: a wallet in debt (the new points repay it,
    `_repay` takes them from the lots), SQLite."""
    order = Order(**order_row)
    if entry_row is None:
        session.add(order)
        session.flush()
        return
    entry = Entry(**entry_row)
    session.add(entry)
    session.flush()
    order.entry_id = entry.id
    session.add(order)
    session.flush()  # the order before its lot
    session.add(Lot(entry_id=entry.id, **lot_row))
    _repay(session, wallet, entry)


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
        _written(wallet)  # even when the refund takes back no points
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
        counted = order.amount_refunded < order.total
        order.amount_refunded += money
        order.points_reversed += points
        _count_order(
            wallet,
            -money,
            order.currency,
            -1 if counted and order.amount_refunded == order.total else 0,
        )
        order.items = lines
        session.flush()
        publish(
            session,
            events.OrderRefunded(
                **_told(wallet, now, actor),
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


def recount_orders(session: Session, *, batch_size: int = 500) -> int:
    """Count every wallet's spend and orders again from its orders (invariant 8), a batch of
    wallets at a time, each batch one transaction under the wallets' locks; return how many
    wallets were corrected. For orders or refunds that a process of a version before
    migration 0019 recorded after the upgrade, without counting them."""
    corrected = 0
    after: str | None = ""
    while after is not None:
        fixed, after = _recount_batch(session, after, batch_size)
        corrected += fixed
    return corrected


@retrying
def _recount_batch(session: Session, after: str, batch_size: int) -> tuple[int, str | None]:
    """Recount the next ``batch_size`` wallets by member id after ``after``: how many were
    corrected, and the last member id (None when there were none left)."""
    with unit_of_work(session):
        member_ids = list(
            session.scalars(
                select(Wallet.member_id)
                .where(Wallet.member_id > after)
                .order_by(Wallet.member_id)
                .limit(batch_size)
            )
        )
        if not member_ids:
            return 0, None
        wallets = [locked.wallet for locked in _lock_wallets(session, member_ids).values()]
        kept = rules.orders_kept(
            session.execute(
                order_totals_by_currency().where(
                    Order.wallet_id.in_([wallet.id for wallet in wallets])
                )
            )
        )
        corrected = 0
        for wallet in wallets:
            spend, count = kept.get(wallet.id, (Decimal(0), 0))
            if wallet.spend != spend or wallet.order_count != count:
                wallet.spend, wallet.order_count = spend, count
                corrected += 1
        return corrected, member_ids[-1]


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
    settings: Settings,
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


# Of the entries naming a redemption, those that move its points: transfers (other points
# held in place of a refunded order's) and what its cancellation gave back (allocations of
# minus the points). The cancellation's entry may also repay debt with the points it gave back
# (plus allocations): those the claim did not keep.
_moves_the_claims_points = or_(
    Entry.kind == "transfer", and_(Entry.kind == "reversal", Allocation.points < 0)
)


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
                    Entry.reference_type == "redemption",
                    Entry.reference_id == Redemption.id,
                    _moves_the_claims_points,
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


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
