"""Due work: settling a wallet (releasing timed-out holds, activating pending lots whose
return window passed, expiring lots by date or for inactivity), one wallet, several, or in
batches for the job.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import and_, case, func, select, update
from sqlalchemy.orm import Session

from loyalty import bus, clock
from loyalty.bus import publish
from loyalty.db import among, insert_rows, retrying, unit_of_work
from loyalty.ledger import events
from loyalty.ledger.models import Allocation, Entry, Hold, Lot, Order, Wallet
from loyalty.ledger.service import _bulk
from loyalty.ledger.service._core import (
    ACTIVATION_REASON,
    EXPIRY_REASON,
    Settings,
    _allocate,
    _aware,
    _deadline,
    _entry_values,
    _is_due,
    _lapsed,
    _last_activity,
    _lock_wallet_by_id,
    _lock_wallets,
    _post,
    _told,
)
from loyalty.ledger.service._giveback import _expired, _release, _repay
from loyalty.ledger.service.settings import get_settings
from loyalty.members.models import Member


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
    so several runners share the work, each taking the next due wallets no other holds, and
    each lot is activated or expired once. Returns the number of wallets settled (0 when
    nothing is due, or every due wallet is another transaction's).
    """
    with unit_of_work(session):
        now = clock.now()
        due = (
            select(Wallet.id)
            .where(Wallet.next_due_at <= now)
            .order_by(Wallet.next_due_at)
            .limit(batch_size)
        )
        if session.get_bind().dialect.name == "postgresql":
            # The lock is taken where the batch is chosen: two runners choosing the same
            # first wallets would otherwise leave the second with none (it would stop as if
            # nothing were due). A wallet another transaction committed meanwhile is read
            # again and left out once it is no longer due. Taken in due order, not member-id
            # order: a runner never waits for a lock, so it cannot close a circle of waits,
            # and nothing in a batch locks another wallet (follow-ups on other members run
            # after the commit).
            due = due.with_for_update(skip_locked=True)
        query = (
            select(Wallet, Member)
            .join(Member, Member.id == Wallet.member_id)
            .where(Wallet.id.in_(due))
            .order_by(Wallet.member_id)
            .execution_options(populate_existing=True)
        )
        if session.get_bind().dialect.name == "postgresql":
            # The subquery's lock re-reads only its own rows: the outer query would return a
            # wallet as the statement's snapshot saw it, missing a change committed between
            # that snapshot and the lock. Locking the outer rows too (ours already: no wait)
            # returns their latest version.
            query = query.with_for_update(of=Wallet)
        rows = session.execute(query).all()  # kept: the session holds its objects weakly
        wallets = [wallet for wallet, _member in rows]
        settings = get_settings(session)
        plain = _plainly_due(session, wallets, settings, now)
        # The outbox rows of the batch's events in one statement; the wallets' new balances
        # and due moments in one UPDATE each, when the batch ends (an autoflush at each of
        # its statements would update a wallet two or three times).
        others = [wallet for wallet in wallets if wallet.id not in plain]
        with bus.batch(session), session.no_autoflush:
            _settle_plainly(session, [w for w in wallets if w.id in plain], settings, now, actor)
        session.flush()
        for wallet in others:
            _settle(session, wallet, settings, now, actor)
    return len(wallets)


def _plainly_due(
    session: Session, wallets: list[Wallet], settings: Settings, now: dt.datetime
) -> set[str]:
    """The wallets whose due work is only activations and expiries by date, which
    `_settle_plainly` does for many at once: no debt to repay, no hold timing out, not under
    the inactivity policy. The others go through `_settle`, one at a time."""
    if settings.expiry_policy == "inactivity":
        return set()
    candidates = {wallet.id for wallet in wallets if not wallet.debt}
    if candidates:
        candidates -= set(
            session.scalars(
                select(Hold.wallet_id)
                .where(
                    among(session, Hold.wallet_id, candidates),
                    Hold.status == "held",
                    Hold.expires_at <= now,
                )
                .distinct()
            )
        )
    return candidates


def _settle_plainly(
    session: Session,
    wallets: list[Wallet],
    settings: Settings,
    now: dt.datetime,
    actor: str | None,
) -> None:
    """`_settle` for many wallets at once, when their due work is only activations and
    expiries by date (`_plainly_due`): the same entries, allocations, lot changes and events,
    in the same order, with a handful of set-based statements for the whole batch instead of
    several per lot. The wallets must be locked. On PostgreSQL, when every subscriber of
    the events has a bulk form, in one statement (`_bulk.settle`)."""
    if not wallets:
        return
    if session.get_bind().dialect.name == "postgresql" and (plugged := _bulk.forms()) is not None:
        _bulk.settle(session, wallets, plugged, now, actor)
        return
    ids = [wallet.id for wallet in wallets]
    activating = session.execute(
        select(Lot.id, Lot.wallet_id, Lot.order_pk, Lot.remaining, Lot.expires_at, Order.order_id)
        .outerjoin(Order, Order.id == Lot.order_pk)
        .where(
            among(session, Lot.wallet_id, ids),
            Lot.activated_at.is_(None),
            Lot.activates_at <= now,
        )
        .order_by(Lot.wallet_id, Lot.activates_at, Lot.id)
    ).all()
    expiring = session.execute(
        select(Lot.id, Lot.wallet_id, Lot.remaining, Lot.expires_at)
        .where(
            among(session, Lot.wallet_id, ids),
            Lot.activated_at.is_not(None),
            Lot.expired_at.is_(None),
            Lot.remaining > 0,
            Lot.expires_at <= now,
        )
        .order_by(Lot.wallet_id, Lot.expires_at, Lot.id)
    ).all()
    activations: dict[str, list[Any]] = {}
    for row in activating:
        activations.setdefault(row.wallet_id, []).append(row)
    expiries: dict[str, list[tuple[dt.datetime, int, int]]] = {}  # (expires_at, lot id, points)
    for lot in expiring:
        expiries.setdefault(lot.wallet_id, []).append(
            (_aware(lot.expires_at), lot.id, lot.remaining)
        )
    for row in activating:  # points that activate already past their expiry date expire too
        if row.remaining > 0 and row.expires_at is not None and _aware(row.expires_at) <= now:
            expiries.setdefault(row.wallet_id, []).append(
                (_aware(row.expires_at), row.id, row.remaining)
            )

    entries: list[dict[str, Any]] = []
    taken: list[tuple[int, int]] = []  # (index of the expiry entry, lot id) for allocations
    for mapped in wallets:
        # The entries move plain numbers (`_Balances`), copied onto the mapped wallet once:
        # moving its instrumented attributes at every entry cost more than the rest of it.
        balances = _Balances(mapped)
        wallet = cast(Wallet, balances)  # what `_entry_values` and `_told` read and move
        for row in activations.get(wallet.id, []):
            if row.remaining:
                entries.append(
                    _entry_values(
                        wallet,
                        kind="activation",
                        points=row.remaining,
                        pending=-row.remaining,
                        available=row.remaining,
                        reference=("order", row.order_id) if row.order_id else None,
                        reason=ACTIVATION_REASON,
                        actor=actor,
                        now=now,
                    )
                )
            if row.order_pk is not None and row.order_id is not None:
                publish(
                    session,
                    events.OrderActivated(
                        **_told(wallet, now, actor),
                        order_pk=row.order_pk,
                        order_id=row.order_id,
                        points=row.remaining,
                    ),
                )
        expired = 0
        for _expires_at, lot_id, points in sorted(expiries.get(wallet.id, [])):
            expired += points
            entries.append(
                _entry_values(
                    wallet,
                    kind="expiry",
                    points=-points,
                    available=-points,
                    counter_account="expiry",
                    reference=("lot", str(lot_id)),
                    reason=EXPIRY_REASON,
                    actor=actor,
                    now=now,
                )
            )
            taken.append((len(entries) - 1, lot_id))
        if expired:
            _expired(session, wallet, expired, "expiry_date", now, actor)
        balances.copy_to(mapped)

    activated_ids = [row.id for row in activating]
    expired_ids = [lot_id for _, lot_id in taken]
    unsynchronised = {"synchronize_session": False}  # the loop below expires what is loaded
    if activated_ids:
        session.execute(
            update(Lot).where(among(session, Lot.id, activated_ids)).values(activated_at=now),
            execution_options=unsynchronised,
        )
    if expired_ids:
        session.execute(
            update(Lot)
            .where(among(session, Lot.id, expired_ids))
            .values(remaining=0, expired_at=now),
            execution_options=unsynchronised,
        )
    for lot_id in activated_ids + expired_ids:  # what this session may hold of them is stale
        loaded = session.identity_map.get(session.identity_key(Lot, lot_id))
        if loaded is not None:
            session.expire(loaded)
    if entries:
        entry_ids = _new_entry_ids(session, len(entries))
        for entry_id, entry in zip(entry_ids, entries, strict=True):
            entry["id"] = entry_id
        insert_rows(session, Entry, entries)
        if taken:
            remaining = {row.id: row.remaining for row in expiring} | {
                row.id: row.remaining for row in activating
            }
            insert_rows(
                session,
                Allocation,
                [
                    {"entry_id": entry_ids[index], "lot_id": lot_id, "points": remaining[lot_id]}
                    for index, lot_id in taken
                ],
            )
    by_id = {mapped.id: mapped for mapped in wallets}
    for wallet_id, moment in _next_due_of(session, ids).items():
        by_id[wallet_id].next_due_at = moment


class _Balances:
    """A locked wallet's id, member and cached balances as plain attributes, for
    `_entry_values` and `_told` while `_settle_plainly` writes its entries; `copy_to` puts
    the balances that changed on the mapped wallet."""

    __slots__ = (
        "id",
        "member_id",
        "available",
        "pending",
        "held",
        "debt",
        "lifetime_earned",
        "updated_at",
    )
    _MOVED = ("available", "pending", "held", "debt", "lifetime_earned", "updated_at")

    def __init__(self, wallet: Wallet) -> None:
        self.id = wallet.id
        self.member_id = wallet.member_id
        for name in self._MOVED:
            setattr(self, name, getattr(wallet, name))

    def copy_to(self, wallet: Wallet) -> None:
        for name in self._MOVED:
            value = getattr(self, name)
            if value != getattr(wallet, name):
                setattr(wallet, name, value)


def _new_entry_ids(session: Session, count: int) -> list[int]:
    """``count`` new entry ids, ascending (a wallet's entries are in id order): from the
    column's sequence on PostgreSQL; on SQLite, whose writers take turns, after the largest."""
    if session.get_bind().dialect.name == "postgresql":
        sequence = func.pg_get_serial_sequence(Entry.__tablename__, "id")
        drawn = session.scalars(
            select(func.nextval(sequence)).select_from(func.generate_series(1, count))
        )
        return sorted(int(entry_id) for entry_id in drawn)
    last = int(session.scalar(select(func.coalesce(func.max(Entry.id), 0))) or 0)
    return list(range(last + 1, last + 1 + count))


def _next_due_of(session: Session, wallet_ids: list[str]) -> dict[str, dt.datetime | None]:
    """`_next_due` of many wallets (not under the inactivity policy) in two queries."""
    pending = case((Lot.activated_at.is_(None), Lot.activates_at))
    live = case(
        (
            and_(Lot.activated_at.is_not(None), Lot.expired_at.is_(None), Lot.remaining > 0),
            Lot.expires_at,
        )
    )
    moments: dict[str, list[Any]] = {wallet_id: [] for wallet_id in wallet_ids}
    for wallet_id, activates, expires in session.execute(
        select(Lot.wallet_id, func.min(pending), func.min(live))
        .where(among(session, Lot.wallet_id, wallet_ids))
        .group_by(Lot.wallet_id)
    ):
        moments[wallet_id] += [activates, expires]
    for wallet_id, expires in session.execute(
        select(Hold.wallet_id, func.min(Hold.expires_at))
        .where(among(session, Hold.wallet_id, wallet_ids), Hold.status == "held")
        .group_by(Hold.wallet_id)
    ):
        moments[wallet_id].append(expires)
    return {
        wallet_id: min((_aware(m) for m in found if m is not None), default=None)
        for wallet_id, found in moments.items()
    }


def _settle(
    session: Session,
    wallet: Wallet,
    settings: Settings,
    now: dt.datetime,
    actor: str | None,
) -> int:
    """Do the wallet's due work: release timed-out holds, activate pending lots whose return
    window has passed, expire lots (by date, or all of them after inactivity). The wallet
    must be locked. Returns the number of entries written."""
    if not _is_due(wallet, now):
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
                reason=ACTIVATION_REASON,
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
                    **_told(wallet, now, actor),
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
            reason="Inactivity" if inactive else EXPIRY_REASON,
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


def _next_due(session: Session, wallet: Wallet, settings: Settings) -> dt.datetime | None:
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
