"""Due work: settling a wallet (releasing timed-out holds, activating pending lots whose
return window passed, expiring lots by date or for inactivity), one wallet, several, or in
batches for the job.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.bus import publish
from loyalty.db import retrying, unit_of_work
from loyalty.ledger import events
from loyalty.ledger.models import Hold, Lot, Order, ProgramSettings, Wallet
from loyalty.ledger.service._core import (
    _allocate,
    _aware,
    _deadline,
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
