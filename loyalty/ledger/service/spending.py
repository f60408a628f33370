"""Spending points at checkout: redemptions, and holds placed, captured and released."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.bus import publish
from loyalty.db import new_id, retrying, unit_of_work
from loyalty.ledger import events
from loyalty.ledger.errors import CaptureExceedsHoldError, HoldNotHeldError
from loyalty.ledger.models import Hold, Redemption
from loyalty.ledger.service._core import (
    Balance,
    _consume,
    _lock_hold,
    _member,
    _note_due,
    _post,
    _require_active,
    _told,
    _touch,
    entry_public_id,
)
from loyalty.ledger.service._giveback import (
    _expire_held,
    _give_back,
    _hold_changed,
    _release,
    _Restoration,
    _restoration,
)
from loyalty.ledger.service.due import _settle
from loyalty.ledger.service.postings import PointsMove, _ready_to_spend, spend_points
from loyalty.ledger.service.settings import get_settings


@dataclass(frozen=True)
class HoldResult:
    hold: Hold
    balance: Balance


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
            # Captured before the rest goes back (see `_release`).
            hold.status = "captured"
            hold.captured_points = captured
            hold.redemption_id = redemption_id
            hold.closed_at = now
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
            _touch(wallet, settings, now)
            _hold_changed(session, wallet, hold, now, actor)
            publish(
                session,
                events.PointsRedeemed(
                    **_told(wallet, now, actor),
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
