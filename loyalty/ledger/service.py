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
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.audit import service as audit_service
from loyalty.community import service as community_service
from loyalty.db import Page, dialect_insert, new_id, retrying, unit_of_work
from loyalty.earning import service as earning_service
from loyalty.errors import (
    CaptureExceedsHoldError,
    HoldNotFoundError,
    HoldNotHeldError,
    InsufficientPointsError,
    InvalidFieldError,
    MemberClosedError,
    MemberNotActiveError,
    OrderConflictError,
    OrderNotFoundError,
    RedemptionAlreadyReturnedError,
    RedemptionNotFoundError,
    RefundConflictError,
    RefundExceedsOrderError,
)
from loyalty.ledger import rules
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
from loyalty.members import service as members_service
from loyalty.members.models import Member
from loyalty.referrals import service as referrals_service
from loyalty.tiers import service as tiers_service

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
)


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
        )
    return settings


@retrying
def update_settings(session: Session, *, changes: dict[str, Any], actor: str) -> ProgramSettings:
    """Change core settings. New values apply to points earned from now on: lots keep the
    expiry date they were given, except under the inactivity policy, which the job applies."""
    with unit_of_work(session):
        settings = session.get(ProgramSettings, 1, with_for_update=True)
        if settings is None:
            settings = get_settings(session)
            session.add(settings)
        before = {field: getattr(settings, field) for field in SETTINGS_FIELDS}
        for field in SETTINGS_FIELDS:
            if field in changes:
                setattr(settings, field, changes[field])
        settings.updated_at = clock.now()
        settings.updated_by = actor
        if settings.expiry_policy == "inactivity":
            # Every wallet with points may now be due: let the job look at them all.
            session.execute(
                update(Wallet).where(Wallet.available > 0).values(next_due_at=clock.now())
            )
        audit_service.record(
            session,
            actor=actor,
            action="updated",
            entity_type="program_settings",
            entity_id="core",
            before=before,
            after={field: getattr(settings, field) for field in SETTINGS_FIELDS},
        )
    return settings


# --- reading -------------------------------------------------------------------------------


def points_summaries(session: Session, member_ids: list[str]) -> dict[str, Wallet]:
    """The wallets of these members, by member id (members without one have no points yet)."""
    if not member_ids:
        return {}
    wallets = session.scalars(select(Wallet).where(Wallet.member_id.in_(member_ids)))
    return {wallet.member_id: wallet for wallet in wallets}


def get_balance(session: Session, member_id: str) -> BalanceReport:
    """Balances and the points expiring in the next 90 days, grouped by day, soonest first.

    Settles due work first when there is some (an activation or expiry whose time has come),
    so the figures are those of now. Raises `MemberNotFoundError`.
    """
    _member(session, member_id)
    now = clock.now()
    wallet = session.scalar(select(Wallet).where(Wallet.member_id == member_id))
    if wallet is not None and _is_due(wallet, get_settings(session), now):
        settle_wallet(session, wallet_id=wallet.id)
        session.refresh(wallet)
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
    """The member's ledger entries, newest first. Raises `MemberNotFoundError`."""
    _member(session, member_id)
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


def order_points_since(session: Session, member_id: str, since: dt.datetime) -> int:
    """Points the member's orders earned when reported at or after ``since``, less what
    refunds took back (for caps)."""
    points = session.scalar(
        select(func.coalesce(func.sum(Order.points - Order.points_reversed), 0)).where(
            Order.member_id == member_id, Order.created_at >= since
        )
    )
    return int(points or 0)


def last_order_at(session: Session, member_id: str) -> dt.datetime | None:
    """When the member last placed an order, if ever."""
    moment = session.scalar(select(func.max(Order.placed_at)).where(Order.member_id == member_id))
    return _aware(moment) if moment is not None else None


def get_hold(session: Session, hold_id: str) -> Hold:
    hold = session.get(Hold, hold_id)
    if hold is None:
        raise HoldNotFoundError(hold_id)
    return hold


# --- orders and refunds --------------------------------------------------------------------


@retrying
def accrue_order(
    session: Session,
    *,
    client_id: str,
    order_id: str,
    member_id: str,
    total: int,
    currency: str,
    items: list[dict[str, Any]] | None = None,
    placed_at: dt.datetime | None = None,
    actor: str | None = None,
) -> Replayable:
    """Credit the points an order earns: pending for the return window, then active.

    Idempotent on ``(client_id, order_id)``: the same order again returns the first result
    (``created`` False); the same order id with other data raises `OrderConflictError`.
    Locks the member's wallet. Raises `MemberNotFoundError`, `MemberNotActiveError` and
    `InvalidFieldError` (unknown currency, duplicate SKUs).
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

    with unit_of_work(session):
        locked = _lock_wallet(session, member_id)
        wallet, settings = locked.wallet, locked.settings
        # Read after the lock, in a statement of its own: a concurrent report of this order
        # that held the lock has committed by now and must be seen.
        existing = session.scalar(
            select(Order).where(Order.client_id == client_id, Order.order_id == order_id)
        )
        if existing is not None:
            if existing.request_hash != fingerprint:
                raise OrderConflictError(order_id)
            return Replayable(existing.response, created=False)
        _require_active(locked.member)
        now = clock.now()
        _settle(session, wallet, settings, now, actor)

        placed = placed_at or now
        quote = earning_service.price_order(
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
        for item, share in zip(items, quote.line_points, strict=True):
            item["points"] = share
            item["refunded_quantity"] = 0
        activates_at = placed + dt.timedelta(days=settings.pending_days)
        pending = activates_at > now
        expires_at = rules.expiry_for(
            placed, settings.expiry_policy, settings.expiry_months, settings.expiry_period
        )
        # Everything the wallet row gets is set before the entry's flush writes it, so the
        # common accrual costs one UPDATE of the wallet and one INSERT per new row.
        _touch(wallet, settings, now)
        if points > 0:
            _note_due(wallet, activates_at if pending else expires_at)
        order = Order(
            id=new_id("ord"),
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
        tiers_service.after_accrual(session, member_id=member_id, now=now, actor=actor)
        community_service.after_order(
            session, member_id=member_id, order_pk=order.id, now=now, actor=actor
        )
    return Replayable(order.response, created=True)


@retrying
def refund_order(
    session: Session,
    *,
    client_id: str,
    order_id: str,
    refund_id: str,
    amount: int | None = None,
    items: list[dict[str, Any]] | None = None,
    actor: str | None = None,
) -> Replayable:
    """Reverse the points of (part of) an order, in proportion to the amount refunded (per
    item when items are given), from the order's own lots, pending ones first.

    Points already spent are taken from the rest of the balance; what is still missing is a
    shortfall (``within_balance``) or debt (``allow_negative``). Idempotent on
    ``(client_id, refund_id)``. Locks the member's wallet. Raises `OrderNotFoundError`,
    `RefundConflictError`, `RefundExceedsOrderError` and `InvalidFieldError`.
    """
    fingerprint = rules.request_fingerprint(
        "refund", refund_id, {"order_id": order_id, "amount": amount, "items": items}
    )
    with unit_of_work(session):
        order = session.scalar(
            select(Order).where(Order.client_id == client_id, Order.order_id == order_id)
        )
        if order is None:
            raise OrderNotFoundError(order_id)
        wallet = _lock_wallet_by_id(session, order.wallet_id)
        session.refresh(order)
        existing = session.scalar(
            select(Refund).where(Refund.client_id == client_id, Refund.refund_id == refund_id)
        )
        if existing is not None:
            if existing.request_hash != fingerprint:
                raise RefundConflictError(refund_id)
            return Replayable(existing.response, created=False)
        settings = get_settings(session)
        now = clock.now()
        _settle(session, wallet, settings, now, actor)

        refunded_amount, points = _refund_share(order, amount, items)
        refund = Refund(
            id=new_id("rfd"),
            client_id=client_id,
            refund_id=refund_id,
            order_pk=order.id,
            amount=refunded_amount,
            items=items or [],
            points_reversed=points,
            shortfall=0,
            request_hash=fingerprint,
            response={},
        )
        if points > 0:
            _reverse(session, wallet, order, refund, points, settings, now, actor)
        session.add(refund)
        order.amount_refunded += refunded_amount
        order.points_reversed += points
        refund.response = {
            "refund_id": refund_id,
            "order_id": order_id,
            "points_reversed": points,
            "shortfall": refund.shortfall,
            "balance": Balance.of(wallet).as_dict(),
        }
        session.flush()
        for area in (referrals_service, community_service):
            area.on_order_refunded(
                session,
                member_id=order.member_id,
                order_pk=order.id,
                refund_pk=refund.id,
                now=now,
                actor=actor,
            )
        refund.response["balance"] = Balance.of(wallet).as_dict()
    return Replayable(refund.response, created=True)


def _refund_share(
    order: Order, amount: int | None, items: list[dict[str, Any]] | None
) -> tuple[int, int]:
    """How much money a refund returns and how many points it reverses; updates the order's
    per-item refunded quantities."""
    refundable = order.total - order.amount_refunded
    if items:
        lines = {line["sku"]: line for line in order.items}
        new_lines = [dict(line) for line in order.items]
        by_sku = {line["sku"]: line for line in new_lines}
        money = 0
        points = 0
        for index, item in enumerate(items):
            line = lines.get(item["sku"])
            if line is None:
                raise InvalidFieldError(
                    f"items/{index}/sku", "The order has no item with this sku."
                )
            left = line["quantity"] - line["refunded_quantity"]
            if item["quantity"] > left:
                raise RefundExceedsOrderError(
                    f"Only {left} of {item['sku']!r} are left to refund.",
                    sku=item["sku"],
                    refundable_quantity=left,
                )
            target = by_sku[item["sku"]]
            before = rules.cumulative_share(
                line["points"], target["refunded_quantity"], line["quantity"]
            )
            target["refunded_quantity"] += item["quantity"]
            after = rules.cumulative_share(
                line["points"], target["refunded_quantity"], line["quantity"]
            )
            points += after - before
            money += item["quantity"] * line["unit_price"]
        money = min(money, refundable)
        order.items = new_lines
    else:
        assert amount is not None
        if amount > refundable:
            raise RefundExceedsOrderError(
                f"{refundable} of the order's {order.total} are left to refund.",
                refundable_amount=refundable,
            )
        money = amount
        points = rules.cumulative_share(
            order.points, order.amount_refunded + amount, order.total
        ) - rules.cumulative_share(order.points, order.amount_refunded, order.total)
    if money <= 0 and not items:
        raise RefundExceedsOrderError(
            "Nothing is left of the order to refund.", refundable_amount=refundable
        )
    points = max(0, min(points, order.points - order.points_reversed))
    return money, points


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
    order_lots = list(
        session.scalars(
            select(Lot)
            .where(Lot.order_pk == order.id, Lot.remaining > 0)
            .order_by(Lot.activated_at.is_not(None), Lot.id)
        )
    )
    plan: list[tuple[Lot, int]] = []
    left = points
    from_pending = from_active = 0
    for lot in order_lots:  # pending lots first, then the order's active ones
        take = min(lot.remaining, left)
        if take:
            plan.append((lot, take))
            left -= take
            if lot.activated_at is None:
                from_pending += take
            else:
                from_active += take
    if left:
        others = [lot for lot in _spendable_lots(session, wallet) if lot.order_pk != order.id]
        spendable = sum(lot.remaining for lot in others)
        for lot_id, take in rules.plan_consumption(_views(others), min(left, spendable)):
            plan.append((next(lot for lot in others if lot.id == lot_id), take))
            from_active += take
            left -= take
    debt = left if settings.refund_policy == "allow_negative" else 0
    refund.shortfall = left - debt
    entry = _post(
        session,
        wallet,
        kind="reversal",
        points=-(points - refund.shortfall),
        pending=-from_pending,
        available=-(from_active + debt),
        debt=debt,
        earned=-points,
        counter_account="issuance",
        reference=("refund", refund.refund_id),
        reason=f"Refund of order {order.order_id}"
        + (f"; {refund.shortfall} points already spent" if refund.shortfall else ""),
        actor=actor,
        now=now,
    )
    refund.entry_id = entry.id
    for lot, take in plan:
        _allocate(session, entry, lot, take)


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
    live, _late = _restoration(session, redemption.entry_id, redemption.points, now)
    back = sum(points for _, points in live)
    if back:
        entry = _post(
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
        )
        _restore(session, wallet, entry, live)
        _repay(session, wallet, entry)
    redemption.returned_at = now
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
    tiers_service.after_accrual(session, member_id=member_id, now=now, actor=actor)
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
            live, late = _restoration(session, hold.entry_id, rest, now) if rest else ([], 0)
            _expire_held(session, wallet, hold, late, now, actor)
            entry = _post(
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
            )
            _restore(session, wallet, entry, live)
            _repay(session, wallet, entry)
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
        _settle(session, wallet, get_settings(session), now, actor)
        if hold.status != "held":
            refused = HoldNotHeldError(hold.id, hold.status)
        else:
            _release(session, wallet, hold, "released", now, actor)
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
            if settings.expiry_policy == "inactivity":
                _note_due(
                    wallet,
                    rules.inactivity_deadline(_last_activity(wallet), settings.expiry_months),
                )
        else:
            _consume(session, wallet, entry, -points)
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
    taken back (as ``points``, negative) and the balance. Locks the member's wallet."""
    if points <= 0:
        raise ValueError("a clawback takes at least one point")
    locked = _lock_wallet(session, member_id)
    wallet, settings = locked.wallet, locked.settings
    now = clock.now()
    _settle(session, wallet, settings, now, actor)
    taken = min(points, max(wallet.available, 0))
    debt = points - taken if settings.refund_policy == "allow_negative" else 0
    if taken + debt == 0:
        return PointsMove("", 0, Balance.of(wallet))
    missing = points - taken - debt
    entry = _post(
        session,
        wallet,
        kind="reversal",
        points=-(taken + debt),
        available=-(taken + debt),
        debt=debt,
        earned=-min(points, wallet.lifetime_earned),
        counter_account="issuance",
        reference=reference,
        reason=reason + (f"; {missing} points already spent" if missing else ""),
        actor=actor,
        now=now,
    )
    if taken:
        _consume(session, wallet, entry, taken)
    return PointsMove(entry_public_id(entry), -(taken + debt), Balance.of(wallet))


# --- due work ------------------------------------------------------------------------------


@retrying
def settle_wallet(session: Session, *, wallet_id: str, actor: str | None = None) -> int:
    """Do what is due on one wallet now; returns the number of entries written."""
    with unit_of_work(session):
        wallet = _lock_wallet_by_id(session, wallet_id)
        return _settle(session, wallet, get_settings(session), clock.now(), actor)


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
        query = (
            select(Wallet)
            .where(Wallet.next_due_at <= now)
            .order_by(Wallet.next_due_at)
            .limit(batch_size)
        )
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
    query = (
        select(Wallet, Member, ProgramSettings)
        .join(Member, Member.id == Wallet.member_id)
        .join(ProgramSettings, ProgramSettings.id == 1)
        .where(Wallet.member_id == member_id)
        .with_for_update(of=Wallet)
        .execution_options(populate_existing=True)
    )
    row = session.execute(query).first()
    if row is None:
        _member(session, member_id)  # raises when there is no such member
        now = clock.now()
        values = {
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
        insert = dialect_insert(session)
        session.execute(insert(Wallet).values(**values).on_conflict_do_nothing())
        row = session.execute(query).first()
        if row is None:  # no settings row: a database from before the defaults existed
            raise AssertionError("the program_settings row is missing; run loyalty db upgrade")
    return _Locked(*row)


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
) -> Entry:
    """Write one entry and move the wallet's cached balances with it.

    An entry that makes points spendable (``repays_debt``) repays the wallet's debt from them
    in the same entry; the caller then takes the repaid points from the lots with `_repay`.
    """
    repay = 0
    if repays_debt and wallet.debt:
        repay = min(wallet.debt, max(0, wallet.available + wallet.debt + available))
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
        balance_available=wallet.available,
        balance_pending=wallet.pending,
        balance_held=wallet.held,
        created_at=now,
    )
    session.add(entry)
    session.flush()
    return entry


def _repay(session: Session, wallet: Wallet, entry: Entry) -> None:
    """Take the debt an entry repaid from the lots, once its points are in them."""
    if entry.debt_delta < 0:
        _consume(session, wallet, entry, -entry.debt_delta)


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
        expires_at=rules.expiry_for(
            now, settings.expiry_policy, settings.expiry_months, settings.expiry_period
        ),
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


def _restoration(
    session: Session, debit_entry_id: int, points: int, now: dt.datetime
) -> tuple[list[tuple[Lot, int]], int]:
    """Which lots get ``points`` of a debit back (exactly the lots it took them from, last
    taken first), and how many of those points have expired meanwhile: their lot's date
    passed, or it was expired, while they were held. Those are not given back."""
    taken = session.execute(
        select(Allocation.lot_id, Allocation.points)
        .where(Allocation.entry_id == debit_entry_id)
        .order_by(Allocation.id)
    ).all()
    plan = rules.plan_restoration([(lot_id, took) for lot_id, took in taken], points)
    lots = {
        lot.id: lot
        for lot in session.scalars(
            select(Lot)
            .where(Lot.id.in_([i for i, _ in plan]))
            .execution_options(populate_existing=True)
        )
    }
    live: list[tuple[Lot, int]] = []
    late = 0
    for lot_id, back in plan:
        lot = lots[lot_id]
        if lot.expired_at is not None or (lot.expires_at is not None and lot.expires_at <= now):
            late += back
        else:
            live.append((lot, back))
    return live, late


def _restore(session: Session, wallet: Wallet, entry: Entry, live: list[tuple[Lot, int]]) -> None:
    for lot, back in live:
        _allocate(session, entry, lot, -back)
        _note_due(wallet, lot.expires_at)


def _expire_held(
    session: Session, wallet: Wallet, hold: Hold, late: int, now: dt.datetime, actor: str | None
) -> None:
    """Held points whose lots expired while they were held expire straight from the hold."""
    if late:
        _post(
            session,
            wallet,
            kind="expiry",
            points=-late,
            held=-late,
            counter_account="expiry",
            reference=("hold", hold.id),
            reason="Held points reached their expiry date before the hold ended",
            actor=actor,
            now=now,
        )


def _release(
    session: Session, wallet: Wallet, hold: Hold, status: str, now: dt.datetime, actor: str | None
) -> None:
    live, late = _restoration(session, hold.entry_id, hold.points, now)
    _expire_held(session, wallet, hold, late, now, actor)
    back = hold.points - late
    if back:
        entry = _post(
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
        )
        _restore(session, wallet, entry, live)
        _repay(session, wallet, entry)
    hold.status = status
    hold.closed_at = now


def _touch(wallet: Wallet, settings: ProgramSettings, now: dt.datetime) -> None:
    """The member was active (earned or spent): under the inactivity policy, points now
    expire that much later."""
    wallet.last_activity_at = now
    if settings.expiry_policy == "inactivity":
        _note_due(wallet, rules.inactivity_deadline(now, settings.expiry_months))


def _last_activity(wallet: Wallet) -> dt.datetime:
    """When the member last earned or spent; a wallet only ever credited by hand counts from
    its creation."""
    return wallet.last_activity_at or wallet.created_at


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
    activated_orders: list[str] = []
    for hold in session.scalars(
        select(Hold)
        .where(Hold.wallet_id == wallet.id, Hold.status == "held", Hold.expires_at <= now)
        .order_by(Hold.expires_at, Hold.id)
    ):
        _release(session, wallet, hold, "expired", now, actor)
        written += 1
    for lot in session.scalars(
        select(Lot)
        .where(Lot.wallet_id == wallet.id, Lot.activated_at.is_(None), Lot.activates_at <= now)
        .order_by(Lot.activates_at, Lot.id)
    ):
        lot.activated_at = now
        if lot.remaining:
            order_ref = session.scalar(select(Order.order_id).where(Order.id == lot.order_pk))
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
        if lot.order_pk is not None:
            activated_orders.append(lot.order_pk)
    inactive = (
        settings.expiry_policy == "inactivity"
        and rules.inactivity_deadline(_last_activity(wallet), settings.expiry_months) <= now
    )
    expiring = select(Lot).where(
        Lot.wallet_id == wallet.id,
        Lot.activated_at.is_not(None),
        Lot.expired_at.is_(None),
        Lot.remaining > 0,
    )
    if not inactive:
        expiring = expiring.where(Lot.expires_at <= now)
    for lot in session.scalars(expiring.order_by(Lot.expires_at, Lot.id)):
        points = lot.remaining
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
    wallet.next_due_at = _next_due(session, wallet, settings)
    # Other areas hear of activated orders once the wallet is settled: what they credit in
    # return (a referral reward) settles nothing twice.
    for order_pk in dict.fromkeys(activated_orders):
        referrals_service.on_order_activated(
            session, member_id=wallet.member_id, order_pk=order_pk, now=now, actor=actor
        )
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
    if settings.expiry_policy == "inactivity" and wallet.available + wallet.debt > 0:
        candidates.append(rules.inactivity_deadline(_last_activity(wallet), settings.expiry_months))
    moments = [_aware(m) for m in candidates if m is not None]
    return min(moments) if moments else None


def _aware(moment: dt.datetime) -> dt.datetime:
    """Aggregates bypass the column type on SQLite, so a MIN() may come back naive."""
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
