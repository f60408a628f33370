"""The ledger's invariants (DESIGN.md section 5), checked over the whole database.

1. each wallet: ``available`` = remaining on its active lots minus debt, ``pending`` = remaining
   on its pending lots, ``held`` = points of its open holds;
2. cached balances (and debt, lifetime earned, the last entry's balance_after) equal the sums
   of the wallet's entries;
3. every entry balances against its counter-account, so all accounts sum to zero;
4. ``0 <= remaining <= amount`` on every lot, each lot's remaining is its amount minus its
   allocations, and each entry's allocations add up to the points it took from lots;
5. ``available >= 0`` except as debt (``available = -debt``, and debt only while no active
   lot has points left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from loyalty.ledger.models import Allocation, Entry, Hold, Lot, Wallet


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
