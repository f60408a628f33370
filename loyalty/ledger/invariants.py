"""The ledger's invariants (DESIGN.md section 5), checked over the whole database.

1. each wallet: ``available`` = remaining on its active lots minus debt, ``pending`` = remaining
   on its pending lots, ``held`` = points of its open holds;
2. cached balances (and debt, lifetime earned, the last entry's balance_after) equal the sums
   of the wallet's entries;
3. every entry balances against its counter-account, so all accounts sum to zero;
4. ``0 <= remaining <= amount`` on every lot, each lot's remaining is its amount minus its
   allocations, and each entry's allocations add up to the points it took from lots;
5. ``available >= 0`` except as debt (``available = -debt``, and debt only while no active
   lot has points left);
6. each order reconciles: its accrual entry and lot credit exactly ``orders.points``; its lots
   hold at most its points not reversed; its refunds add up to its refunded money and points; a
   wholly refunded order keeps no points anywhere (in its lots, or feeding an open hold or a
   redemption that could be given back) beyond what its refunds still record as outstanding;
7. every captured hold has exactly one redemption, of the captured points, and no other hold
   has one;
8. each wallet's ``spend`` and ``order_count`` are its orders' money less refunds, in major
   units, all currencies added, and how many of them are not wholly refunded (total 0 aside).

Invariant 2 also checks ``balance_after`` on every entry (the running sums of the wallet's
entries), not only on the last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from loyalty.ledger import rules
from loyalty.ledger.models import (
    Allocation,
    Entry,
    Hold,
    Lot,
    Order,
    Redemption,
    Refund,
    Wallet,
)
from loyalty.ledger.reporting import order_totals_by_currency


@dataclass(frozen=True)
class Violation:
    invariant: int
    wallet_id: str | None
    detail: str

    def __str__(self) -> str:
        where = f"wallet {self.wallet_id}" if self.wallet_id else "ledger"
        return f"invariant {self.invariant}, {where}: {self.detail}"


def _sum(column: Any) -> Any:
    return func.coalesce(func.sum(column), 0)


def verify(session: Session) -> list[Violation]:
    """Check every invariant; an empty list means the ledger is sound."""
    return [
        *_lot_balances(session),
        *_entry_balances(session),
        *_double_entry(session),
        *_lots_and_allocations(session),
        *_no_overdraft(session),
        *_running_balances(session),
        *_orders(session),
        *_captured_holds(session),
        *_order_totals(session),
    ]


def _lot_balances(session: Session) -> list[Violation]:
    active = (
        select(Lot.wallet_id, _sum(Lot.remaining).label("points"))
        .where(Lot.activated_at.is_not(None))
        .group_by(Lot.wallet_id)
        .subquery()
    )
    pending = (
        select(Lot.wallet_id, _sum(Lot.remaining).label("points"))
        .where(Lot.activated_at.is_(None))
        .group_by(Lot.wallet_id)
        .subquery()
    )
    held = (
        select(Hold.wallet_id, _sum(Hold.points).label("points"))
        .where(Hold.status == "held")
        .group_by(Hold.wallet_id)
        .subquery()
    )
    rows = session.execute(
        select(
            Wallet.id,
            Wallet.available,
            Wallet.pending,
            Wallet.held,
            Wallet.debt,
            func.coalesce(active.c.points, 0),
            func.coalesce(pending.c.points, 0),
            func.coalesce(held.c.points, 0),
        )
        .outerjoin(active, active.c.wallet_id == Wallet.id)
        .outerjoin(pending, pending.c.wallet_id == Wallet.id)
        .outerjoin(held, held.c.wallet_id == Wallet.id)
    ).all()
    found = []
    for wallet_id, available, pending_, held_, debt, lots_active, lots_pending, holds in rows:
        if available != lots_active - debt:
            found.append(
                Violation(
                    1,
                    wallet_id,
                    f"available {available} != active lots {lots_active} - debt {debt}",
                )
            )
        if pending_ != lots_pending:
            found.append(
                Violation(1, wallet_id, f"pending {pending_} != pending lots {lots_pending}")
            )
        if held_ != holds:
            found.append(Violation(1, wallet_id, f"held {held_} != open holds {holds}"))
    return found


def _entry_balances(session: Session) -> list[Violation]:
    sums = (
        select(
            Entry.wallet_id,
            _sum(Entry.available_delta).label("available"),
            _sum(Entry.pending_delta).label("pending"),
            _sum(Entry.held_delta).label("held"),
            _sum(Entry.debt_delta).label("debt"),
            _sum(Entry.earned_delta).label("earned"),
            func.max(Entry.id).label("last_id"),
        )
        .group_by(Entry.wallet_id)
        .subquery()
    )
    rows = session.execute(
        select(
            Wallet.id,
            Wallet.available,
            Wallet.pending,
            Wallet.held,
            Wallet.debt,
            Wallet.lifetime_earned,
            func.coalesce(sums.c.available, 0),
            func.coalesce(sums.c.pending, 0),
            func.coalesce(sums.c.held, 0),
            func.coalesce(sums.c.debt, 0),
            func.coalesce(sums.c.earned, 0),
            Entry.balance_available,
            Entry.balance_pending,
            Entry.balance_held,
        )
        .outerjoin(sums, sums.c.wallet_id == Wallet.id)
        .outerjoin(Entry, Entry.id == sums.c.last_id)
    ).all()
    found = []
    names = ("available", "pending", "held", "debt", "lifetime_earned")
    for row in rows:
        wallet_id = row[0]
        cached, summed, last = row[1:6], row[6:11], row[11:14]
        for name, have, want in zip(names, cached, summed, strict=True):
            if have != want:
                found.append(Violation(2, wallet_id, f"{name} {have} != sum of entries {want}"))
        if last[0] is not None and tuple(last) != tuple(cached[:3]):
            found.append(
                Violation(2, wallet_id, f"last entry's balance_after {tuple(last)} != wallet")
            )
    return found


def _double_entry(session: Session) -> list[Violation]:
    found = []
    unbalanced = session.scalar(
        select(func.count())
        .select_from(Entry)
        .where(
            Entry.available_delta + Entry.pending_delta + Entry.held_delta + Entry.counter_amount
            != 0
        )
    )
    if unbalanced:
        found.append(Violation(3, None, f"{unbalanced} entries do not balance"))
    members = session.execute(
        select(_sum(Wallet.available), _sum(Wallet.pending), _sum(Wallet.held))
    ).one()
    counters = session.scalar(select(_sum(Entry.counter_amount)))
    total = sum(members) + (counters or 0)
    if total != 0:
        found.append(
            Violation(3, None, f"member accounts {sum(members)} + counter-accounts {counters} != 0")
        )
    return found


def _lots_and_allocations(session: Session) -> list[Violation]:
    found = []
    allocated = (
        select(Allocation.lot_id, _sum(Allocation.points).label("points"))
        .group_by(Allocation.lot_id)
        .subquery()
    )
    for lot_id, wallet_id, amount, remaining, taken in session.execute(
        select(
            Lot.id, Lot.wallet_id, Lot.amount, Lot.remaining, func.coalesce(allocated.c.points, 0)
        )
        .outerjoin(allocated, allocated.c.lot_id == Lot.id)
        .where(
            or_(
                Lot.remaining < 0,
                Lot.remaining > Lot.amount,
                Lot.remaining != Lot.amount - func.coalesce(allocated.c.points, 0),
            )
        )
    ):
        found.append(
            Violation(
                4,
                wallet_id,
                f"lot {lot_id}: remaining {remaining}, amount {amount}, allocated {taken}",
            )
        )

    for lot_id, wallet_id, activates_at, expires_at in session.execute(
        select(Lot.id, Lot.wallet_id, Lot.activates_at, Lot.expires_at).where(
            Lot.expires_at.is_not(None), Lot.expires_at <= Lot.activates_at
        )
    ):
        found.append(
            Violation(
                4,
                wallet_id,
                f"lot {lot_id} expires at {expires_at} before it activates at {activates_at}",
            )
        )

    by_entry = (
        select(Allocation.entry_id, _sum(Allocation.points).label("points"))
        .group_by(Allocation.entry_id)
        .subquery()
    )
    created = (
        select(Lot.entry_id, _sum(Lot.amount).label("points")).group_by(Lot.entry_id).subquery()
    )
    expected = (
        func.coalesce(created.c.points, 0)
        - Entry.available_delta
        - Entry.pending_delta
        - Entry.debt_delta
    )
    for entry_id, wallet_id, kind, got, want in session.execute(
        select(Entry.id, Entry.wallet_id, Entry.kind, func.coalesce(by_entry.c.points, 0), expected)
        .outerjoin(by_entry, by_entry.c.entry_id == Entry.id)
        .outerjoin(created, created.c.entry_id == Entry.id)
        .where(func.coalesce(by_entry.c.points, 0) != expected)
    ):
        found.append(
            Violation(
                4, wallet_id, f"{kind} entry {entry_id}: allocations {got} != lots moved {want}"
            )
        )
    return found


def _no_overdraft(session: Session) -> list[Violation]:
    spendable = (
        select(Lot.wallet_id, _sum(Lot.remaining).label("points"))
        .where(Lot.activated_at.is_not(None))
        .group_by(Lot.wallet_id)
        .subquery()
    )
    rows = session.execute(
        select(Wallet.id, Wallet.available, Wallet.debt, func.coalesce(spendable.c.points, 0))
        .outerjoin(spendable, spendable.c.wallet_id == Wallet.id)
        .where(
            or_(
                and_(Wallet.available < 0, Wallet.available != -Wallet.debt),
                and_(Wallet.debt > 0, func.coalesce(spendable.c.points, 0) > 0),
                Wallet.debt < 0,
                case((Wallet.pending < 0, 1), (Wallet.held < 0, 1), else_=0) == 1,
            )
        )
    ).all()
    return [
        Violation(
            5,
            wallet_id,
            f"available {available} with debt {debt} and {lots} spendable points in lots",
        )
        for wallet_id, available, debt, lots in rows
    ]


def _running_balances(session: Session) -> list[Violation]:
    """Each entry's balance_after is the running sum of its wallet's entries up to it."""

    def running_sum(column: Any) -> Any:
        return func.sum(column).over(partition_by=Entry.wallet_id, order_by=Entry.id)

    running = select(
        Entry.id,
        Entry.wallet_id,
        Entry.balance_available,
        Entry.balance_pending,
        Entry.balance_held,
        running_sum(Entry.available_delta).label("available"),
        running_sum(Entry.pending_delta).label("pending"),
        running_sum(Entry.held_delta).label("held"),
    ).subquery()
    rows = session.execute(
        select(running)
        .where(
            or_(
                running.c.balance_available != running.c.available,
                running.c.balance_pending != running.c.pending,
                running.c.balance_held != running.c.held,
            )
        )
        .order_by(running.c.id)
        .limit(100)
    ).all()
    return [
        Violation(
            2,
            row.wallet_id,
            f"entry {row.id}: balance_after "
            f"{(row.balance_available, row.balance_pending, row.balance_held)} "
            f"!= running sums {(row.available, row.pending, row.held)}",
        )
        for row in rows
    ]


def live_consumer_entries() -> Any:
    """Ids of the entries through which open holds and redemptions that could still be given
    back hold points of lots: the hold or redemption entry itself and the transfers that
    moved what it holds from one lot to another."""
    open_holds = select(Hold.id).where(Hold.status == "held")
    returnable = select(Redemption.id).where(
        Redemption.returned_at.is_(None), Redemption.hold_id.is_(None)
    )
    return (
        select(Hold.entry_id)
        .where(Hold.status == "held")
        .union_all(
            select(Redemption.entry_id).where(
                Redemption.returned_at.is_(None), Redemption.hold_id.is_(None)
            ),
            select(Entry.id).where(
                Entry.kind == "transfer",
                Entry.reference_type == "hold",
                Entry.reference_id.in_(open_holds),
            ),
            select(Entry.id).where(
                Entry.kind == "transfer",
                Entry.reference_type == "redemption",
                Entry.reference_id.in_(returnable),
            ),
        )
    )


def _orders(session: Session) -> list[Violation]:
    found: list[Violation] = []
    # a. The accrual entry and its lot credit exactly the order's points.
    credited = (
        select(Lot.entry_id, _sum(Lot.amount).label("points"), func.count().label("lots"))
        .where(Lot.order_pk.is_not(None))
        .group_by(Lot.entry_id)
        .subquery()
    )
    rows = session.execute(
        select(
            Order.id,
            Order.wallet_id,
            Order.points,
            Order.entry_id,
            Entry.kind,
            Entry.points,
            Entry.wallet_id,
            func.coalesce(credited.c.points, 0),
        )
        .outerjoin(Entry, Entry.id == Order.entry_id)
        .outerjoin(credited, credited.c.entry_id == Order.entry_id)
        .where(
            or_(
                and_(Order.points > 0, Order.entry_id.is_(None)),
                and_(Order.points == 0, Order.entry_id.is_not(None)),
                and_(
                    Order.entry_id.is_not(None),
                    or_(
                        Entry.kind != "accrual",
                        Entry.points != Order.points,
                        Entry.wallet_id != Order.wallet_id,
                        func.coalesce(credited.c.points, 0) != Order.points,
                    ),
                ),
            )
        )
    ).all()
    for order_pk, wallet_id, points, entry_id, kind, entry_points, _, lots in rows:
        found.append(
            Violation(
                6,
                wallet_id,
                f"order {order_pk}: {points} points, accrual entry {entry_id} ({kind} "
                f"{entry_points}), lots credited {lots}",
            )
        )
    orphans = session.scalar(
        select(func.count())
        .select_from(Lot)
        .join(Order, Order.id == Lot.order_pk)
        .where(or_(Order.entry_id.is_(None), Lot.entry_id != Order.entry_id))
    )
    if orphans:
        found.append(Violation(6, None, f"{orphans} lots name an order not credited by them"))

    # b, c, d. Lots, refunds and what a wholly refunded order still feeds.
    in_lots = (
        select(Lot.order_pk, _sum(Lot.remaining).label("points"))
        .where(Lot.order_pk.is_not(None))
        .group_by(Lot.order_pk)
        .subquery()
    )
    refunded = (
        select(
            Refund.order_pk,
            _sum(Refund.amount).label("money"),
            _sum(Refund.points_reversed).label("points"),
            _sum(Refund.outstanding).label("outstanding"),
        )
        .group_by(Refund.order_pk)
        .subquery()
    )
    feeding = (
        select(Lot.order_pk, _sum(Allocation.points).label("points"))
        .join(Lot, Lot.id == Allocation.lot_id)
        .where(Lot.order_pk.is_not(None), Allocation.entry_id.in_(live_consumer_entries()))
        .group_by(Lot.order_pk)
        .subquery()
    )
    lots_ = func.coalesce(in_lots.c.points, 0)
    money = func.coalesce(refunded.c.money, 0)
    reversed_ = func.coalesce(refunded.c.points, 0)
    outstanding = func.coalesce(refunded.c.outstanding, 0)
    fed = func.coalesce(feeding.c.points, 0)
    rows = session.execute(
        select(
            Order.id,
            Order.wallet_id,
            Order.total,
            Order.points,
            Order.amount_refunded,
            Order.points_reversed,
            lots_,
            money,
            reversed_,
            outstanding,
            fed,
        )
        .outerjoin(in_lots, in_lots.c.order_pk == Order.id)
        .outerjoin(refunded, refunded.c.order_pk == Order.id)
        .outerjoin(feeding, feeding.c.order_pk == Order.id)
        .where(
            or_(
                lots_ > Order.points - Order.points_reversed,
                money != Order.amount_refunded,
                reversed_ != Order.points_reversed,
                and_(
                    Order.amount_refunded == Order.total,
                    Order.total > 0,
                    lots_ + fed > outstanding,
                ),
            )
        )
    ).all()
    for row in rows:
        (order_pk, wallet_id, total, points, amount_refunded, points_reversed) = row[:6]
        in_lots_, money_, reversed_sum, outstanding_, fed_ = row[6:]
        if in_lots_ > points - points_reversed:
            found.append(
                Violation(
                    6,
                    wallet_id,
                    f"order {order_pk}: lots hold {in_lots_} points, more than the "
                    f"{points - points_reversed} of its {points} not reversed",
                )
            )
        if money_ != amount_refunded or reversed_sum != points_reversed:
            found.append(
                Violation(
                    6,
                    wallet_id,
                    f"order {order_pk}: refunds add up to {money_} money and {reversed_sum} "
                    f"points, the order says {amount_refunded} and {points_reversed}",
                )
            )
        if amount_refunded == total and total > 0 and in_lots_ + fed_ > outstanding_:
            found.append(
                Violation(
                    6,
                    wallet_id,
                    f"order {order_pk} is wholly refunded but keeps {in_lots_} points in its "
                    f"lots and {fed_} in open holds or returnable redemptions, with "
                    f"{outstanding_} outstanding",
                )
            )
    found += _refund_parts(session)
    return found


def _refund_parts(session: Session) -> list[Violation]:
    """What each refund took, and from where, adds up; expired points are voided at most once,
    and what refunds took from other lots or left outstanding is no more than other entries
    took from the order's lots."""
    found: list[Violation] = []
    for refund_pk, wallet_id, points, expired, shortfall, taken in session.execute(
        select(
            Refund.id,
            Order.wallet_id,
            Refund.points_reversed,
            Refund.points_expired,
            Refund.shortfall,
            func.coalesce(-Entry.points, 0),
        )
        .join(Order, Order.id == Refund.order_pk)
        .outerjoin(Entry, Entry.id == Refund.entry_id)
        .where(
            Refund.points_reversed
            != Refund.points_expired + Refund.shortfall + func.coalesce(-Entry.points, 0)
        )
    ):
        found.append(
            Violation(
                6,
                wallet_id,
                f"refund {refund_pk} reversed {points} points but took {taken}, with "
                f"{shortfall} short and {expired} already expired",
            )
        )

    own_lot = Lot.order_pk == Refund.order_pk
    by_refunds = (
        select(
            Refund.order_pk,
            _sum(case((own_lot, 0), else_=Allocation.points)).label("elsewhere"),
        )
        .select_from(Allocation)
        .join(Entry, Entry.id == Allocation.entry_id)
        .join(Refund, Refund.id == Entry.refund_pk)
        .join(Lot, Lot.id == Allocation.lot_id)
        .where(Entry.kind == "reversal")
        .group_by(Refund.order_pk)
        .subquery()
    )
    own_refund = and_(Entry.kind == "reversal", Refund.order_pk == Lot.order_pk)
    on_order_lots = (
        select(
            Lot.order_pk,
            _sum(
                case(
                    (
                        Entry.kind == "expiry",
                        case((Allocation.points > 0, Allocation.points), else_=0),
                    ),
                    else_=0,
                )
            ).label("expired"),
            _sum(case((or_(Entry.kind == "expiry", own_refund), 0), else_=Allocation.points)).label(
                "consumed"
            ),
        )
        .select_from(Allocation)
        .join(Lot, Lot.id == Allocation.lot_id)
        .join(Entry, Entry.id == Allocation.entry_id)
        .outerjoin(Refund, Refund.id == Entry.refund_pk)
        .where(Lot.order_pk.is_not(None))
        .group_by(Lot.order_pk)
        .subquery()
    )
    # Points a cancelled claim could not give back because their lot had expired.
    returned = (
        select(Redemption.id, Redemption.entry_id)
        .where(Redemption.returned_at.is_not(None))
        .subquery()
    )
    kept_by_returned = (
        select(Lot.order_pk, _sum(Allocation.points).label("points"))
        .select_from(Allocation)
        .join(Lot, Lot.id == Allocation.lot_id)
        .join(Entry, Entry.id == Allocation.entry_id)
        .join(
            returned,
            or_(
                Entry.id == returned.c.entry_id,
                and_(
                    Entry.reference_type == "redemption",
                    Entry.reference_id == returned.c.id,
                    # transfers, and what the cancellation gave back, not the debt that the
                    # given-back points repaid in the same entry
                    or_(
                        Entry.kind == "transfer",
                        and_(Entry.kind == "reversal", Allocation.points < 0),
                    ),
                ),
            ),
        )
        .where(Lot.order_pk.is_not(None))
        .group_by(Lot.order_pk)
        .subquery()
    )
    refunds = (
        select(
            Refund.order_pk,
            _sum(Refund.points_expired).label("voided"),
            _sum(Refund.outstanding).label("outstanding"),
        )
        .group_by(Refund.order_pk)
        .subquery()
    )
    expired_sum = func.coalesce(on_order_lots.c.expired, 0) + func.coalesce(
        kept_by_returned.c.points, 0
    )
    consumed = func.coalesce(on_order_lots.c.consumed, 0)
    elsewhere = func.coalesce(by_refunds.c.elsewhere, 0)
    for (
        order_pk,
        wallet_id,
        voided,
        outstanding,
        elsewhere_,
        expired_,
        consumed_,
    ) in session.execute(
        select(
            Order.id,
            Order.wallet_id,
            refunds.c.voided,
            refunds.c.outstanding,
            elsewhere,
            expired_sum,
            consumed,
        )
        .join(refunds, refunds.c.order_pk == Order.id)
        .outerjoin(by_refunds, by_refunds.c.order_pk == Order.id)
        .outerjoin(on_order_lots, on_order_lots.c.order_pk == Order.id)
        .outerjoin(kept_by_returned, kept_by_returned.c.order_pk == Order.id)
        .where(
            or_(
                refunds.c.voided > expired_sum,
                elsewhere + refunds.c.outstanding > consumed,
            )
        )
    ):
        if voided > expired_:
            found.append(
                Violation(
                    6,
                    wallet_id,
                    f"order {order_pk}: refunds count {voided} points as expired, but only "
                    f"{expired_} of its points expired",
                )
            )
        if elsewhere_ + outstanding > consumed_:
            found.append(
                Violation(
                    6,
                    wallet_id,
                    f"order {order_pk}: refunds took {elsewhere_} points from other lots and "
                    f"left {outstanding} outstanding, but other entries hold only "
                    f"{consumed_} of the order's points",
                )
            )
    return found


def _captured_holds(session: Session) -> list[Violation]:
    redemptions = (
        select(
            Redemption.hold_id,
            func.count().label("count"),
            _sum(Redemption.points).label("points"),
            func.max(Redemption.id).label("id"),
        )
        .where(Redemption.hold_id.is_not(None))
        .group_by(Redemption.hold_id)
        .subquery()
    )
    count = func.coalesce(redemptions.c.count, 0)
    rows = session.execute(
        select(
            Hold.id,
            Hold.wallet_id,
            Hold.status,
            Hold.captured_points,
            Hold.redemption_id,
            count,
            redemptions.c.points,
            redemptions.c.id,
        )
        .outerjoin(redemptions, redemptions.c.hold_id == Hold.id)
        .where(
            or_(
                and_(Hold.status != "captured", count != 0),
                and_(
                    Hold.status == "captured",
                    or_(
                        count != 1,
                        redemptions.c.points != Hold.captured_points,
                        redemptions.c.id != Hold.redemption_id,
                    ),
                ),
            )
        )
    ).all()
    return [
        Violation(
            7,
            wallet_id,
            f"hold {hold_id} ({status}, captured {captured}, redemption {redemption_id}) has "
            f"{n} redemption(s) of {points} points ({red_id})",
        )
        for hold_id, wallet_id, status, captured, redemption_id, n, points, red_id in rows
    ]


def _order_totals(session: Session) -> list[Violation]:
    kept = rules.orders_kept(session.execute(order_totals_by_currency()))
    found = []
    for wallet_id, spend, count in session.execute(
        select(Wallet.id, Wallet.spend, Wallet.order_count)
    ):
        want_spend, want_count = kept.get(wallet_id, (Decimal(0), 0))
        if spend != want_spend or count != want_count:
            found.append(
                Violation(
                    8,
                    wallet_id,
                    f"spend {spend} and order count {count} != its orders' "
                    f"{want_spend} and {want_count}",
                )
            )
    return found
