"""Review 8 probes: helpers comparing the job's settlement in one statement with settling
each wallet alone."""

from __future__ import annotations

import datetime as dt
import re
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.events.models import OutboxEvent
from loyalty.ledger.models import Allocation, Entry, Lot, Wallet
from tests.ledger.test_statements import counting

DAY = dt.timedelta(days=1)


def statements(session: Session) -> AbstractContextManager[list[str]]:
    """The SQL statements sent meanwhile."""
    return counting(session.get_bind().engine)


def in_one_statement(sent: list[str]) -> bool:
    """Whether the job's settlement in one statement was among ``sent``, once."""
    return sum("outbox_told" in statement for statement in sent) == 1


def wallet_of(session: Session, member_id: str) -> Wallet:
    wallet = session.scalar(
        select(Wallet)
        .where(Wallet.member_id == member_id)
        .execution_options(populate_existing=True)
    )
    assert wallet is not None
    return wallet


def mask(value: Any, member_id: str) -> Any:
    if not isinstance(value, str):
        return value
    value = re.sub(r"order-\d+", "order-N", value.replace(member_id, "M"))
    return re.sub(r"\b([a-z]{3})_[0-9A-HJKMNP-TV-Z]{26}\b", r"\1_X", value)


def entries(session: Session, member_id: str, since: int = 0) -> list[tuple[Any, ...]]:
    rows = session.scalars(
        select(Entry)
        .where(Entry.member_id == member_id, Entry.id > since)
        .order_by(Entry.id)
        .execution_options(populate_existing=True)
    ).all()
    return [
        (
            e.kind,
            e.points,
            e.available_delta,
            e.pending_delta,
            e.held_delta,
            e.debt_delta,
            e.earned_delta,
            e.counter_account,
            e.counter_amount,
            e.reference_type,
            mask(e.reference_id, member_id) if e.reference_type == "order" else e.reference_type,
            mask(e.reason, member_id),
            e.actor,
            e.balance_available,
            e.balance_pending,
            e.balance_held,
            e.created_at,
        )
        for e in rows
    ]


def lot_index(session: Session, member_id: str) -> dict[int, int]:
    wallet = wallet_of(session, member_id)
    ids = session.scalars(select(Lot.id).where(Lot.wallet_id == wallet.id).order_by(Lot.id))
    return {lot_id: index for index, lot_id in enumerate(ids)}


def expiry_lots(session: Session, member_id: str) -> list[int]:
    """The lot (by index in the member's lots) each expiry entry references, in id order."""
    index = lot_index(session, member_id)
    rows = session.scalars(
        select(Entry.reference_id)
        .where(Entry.member_id == member_id, Entry.reference_type == "lot")
        .order_by(Entry.id)
    ).all()
    return [index[int(r)] for r in rows]


def allocations(session: Session, member_id: str) -> list[tuple[Any, ...]]:
    index = lot_index(session, member_id)
    rows = session.execute(
        select(Entry.kind, Entry.points, Allocation.lot_id, Allocation.points)
        .join(Allocation, Allocation.entry_id == Entry.id)
        .where(Entry.member_id == member_id)
        .order_by(Entry.id, Allocation.lot_id)
    ).all()
    return [(k, p, index[lot], ap) for k, p, lot, ap in rows]


def lots(session: Session, member_id: str) -> list[tuple[Any, ...]]:
    wallet = wallet_of(session, member_id)
    found = session.scalars(
        select(Lot)
        .where(Lot.wallet_id == wallet.id)
        .order_by(Lot.id)
        .execution_options(populate_existing=True)
    ).all()
    return [
        (
            lot.amount,
            lot.remaining,
            lot.activates_at,
            lot.activated_at,
            lot.expires_at,
            lot.expired_at,
        )
        for lot in found
    ]


def wallet_state(session: Session, member_id: str) -> tuple[Any, ...]:
    w = wallet_of(session, member_id)
    skip = {"id", "member_id", "created_at"}
    return tuple(
        (column.key, getattr(w, column.key))
        for column in Wallet.__table__.columns
        if column.key not in skip
    )


def outbox(session: Session, member_id: str, since: int) -> list[tuple[Any, ...]]:
    rows = session.scalars(
        select(OutboxEvent)
        .where(OutboxEvent.member_id == member_id, OutboxEvent.seq > since)
        .order_by(OutboxEvent.seq)
    ).all()
    return [
        (
            row.type,
            row.version,
            row.occurred_at,
            row.created_at,
            {key: mask(value, member_id) for key, value in row.data.items()},
        )
        for row in rows
    ]


def last_seq(session: Session) -> int:
    return int(session.scalar(select(OutboxEvent.seq).order_by(OutboxEvent.seq.desc())) or 0)


def last_entry(session: Session) -> int:
    return int(session.scalar(select(Entry.id).order_by(Entry.id.desc())) or 0)


def everything(session: Session, member_id: str, since_seq: int) -> dict[str, Any]:
    return {
        "entries": entries(session, member_id),
        "expiry_lots": expiry_lots(session, member_id),
        "allocations": allocations(session, member_id),
        "lots": lots(session, member_id),
        "wallet": wallet_state(session, member_id),
        "outbox": outbox(session, member_id, since_seq),
    }


def assert_same(session: Session, alone: str, batched: str, since_seq: int) -> None:
    mine = everything(session, batched, since_seq)
    theirs = everything(session, alone, since_seq)
    for key in mine:
        if mine[key] != theirs[key]:
            diff = [
                (i, a, b)
                for i, (a, b) in enumerate(zip(mine[key], theirs[key], strict=False))
                if a != b
            ]
            raise AssertionError(
                f"{key}: batched != alone at {diff} (lengths {len(mine[key])}, {len(theirs[key])})"
            )
