"""Postings other areas make inside their own unit of work (locking members, spending
points, returning a redemption, crediting and taking back bonuses), and managers'
adjustments.

The posting functions neither open nor commit a transaction: the caller's unit of work does,
so the points and the caller's own rows are written together or not at all. `adjust` is a unit
of work of its own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.bus import publish
from loyalty.db import new_id, retrying, unit_of_work
from loyalty.errors import MemberClosedError
from loyalty.ledger import events
from loyalty.ledger.errors import (
    InsufficientPointsError,
    RedemptionAlreadyReturnedError,
    RedemptionNotFoundError,
)
from loyalty.ledger.models import Redemption, Wallet
from loyalty.ledger.service._core import (
    Balance,
    Settings,
    _active_lot,
    _consume,
    _lock_wallet,
    _lock_wallet_by_id,
    _lock_wallets,
    _open_wallets,
    _post,
    _require_active,
    _told,
    _touch,
    _written,
    entry_public_id,
)
from loyalty.ledger.service._giveback import _give_back, _repay, _restoration
from loyalty.ledger.service.due import _settle
from loyalty.ledger.service.settings import get_settings
from loyalty.members.events import MemberEnrolled
from loyalty.members.models import Member


@dataclass(frozen=True)
class PointsMove:
    """The result of a redemption or an adjustment."""

    id: str
    points: int
    balance: Balance


def on_member_enrolled(session: Session, event: MemberEnrolled) -> None:
    """Subscriber: a member joined; their (empty) wallet is created with them, so that their
    first order takes the same path as every later one (the wallet's lock reads what pricing
    needs along) instead of creating it then. Members from before this, or written round the
    enrolment, get theirs on first use."""
    _open_wallets(session, [event.member_id])


def lock_member(session: Session, member_id: str) -> Member:
    """Lock the member's wallet (creating it on first use) for the caller's transaction and
    return the member. Take it first: it orders locks so that operations on one member queue
    rather than deadlock. The transaction writes the wallet's row (`_written`): the caller
    changes something of the member under the lock. Raises `MemberNotFoundError`."""
    locked = _lock_wallet(session, member_id)
    _written(locked.wallet)
    return locked.member


def lock_members(session: Session, member_ids: list[str]) -> dict[str, Member]:
    """Lock the wallets of several members for the caller's transaction, in member-id order
    (the one order in which any operation takes more than one wallet), creating missing
    ones; returns the members by id. An operation that will touch several members' points
    (a referral rewards both sides) takes them all here first, before any other wallet.
    The transaction writes their wallets' rows (`_written`). Raises `MemberNotFoundError`."""
    members = {}
    for member_id, locked in _lock_wallets(session, member_ids).items():
        _written(locked.wallet)
        members[member_id] = locked.member
    return members


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
            **_told(wallet, now, actor),
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
    # Returned before its points go back: debt they repay is re-pointed onto the holds and
    # claims still open, never onto this one.
    redemption.returned_at = now
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
        publish(
            session,
            events.PointsReturned(
                **_told(wallet, now, actor),
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
    _touch(wallet, settings, now)  # before the entry's flush: one UPDATE of the wallet
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
    publish(
        session,
        events.BonusCredited(
            **_told(wallet, now, actor),
            entry_id=entry_public_id(entry),
            points=points,
            reason=reason,
            reference=":".join(reference) if reference else None,
        ),
    )
    return PointsMove(entry_public_id(entry), points, Balance.of(wallet))


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
                **_told(wallet, now, actor),
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
            **_told(wallet, now, actor),
            entry_id=entry_public_id(entry),
            points=-(taken + debt),
            reason=reason,
            reference=":".join(reference) if reference else None,
        ),
    )
    return PointsMove(entry_public_id(entry), -(taken + debt), Balance.of(wallet))


def _ready_to_spend(
    session: Session, member_id: str, points: int, actor: str | None
) -> tuple[Wallet, Settings, dt.datetime]:
    """Lock an active member's wallet, settle what is due, and check it holds ``points``."""
    locked = _lock_wallet(session, member_id)
    _require_active(locked.member)
    now = clock.now()
    _settle(session, locked.wallet, locked.settings, now, actor)
    if points > locked.wallet.available:
        raise InsufficientPointsError(locked.wallet.available, points)
    return locked.wallet, locked.settings, now
