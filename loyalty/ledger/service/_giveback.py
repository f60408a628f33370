"""Private: points going back to the lots they came from (a released or captured hold's
rest, a returned redemption), held points expiring with their lots, and debt repayment, with
the stand-ins and transfers that let other points take the place of a refunded order's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from loyalty.bus import publish
from loyalty.ledger import events, rules
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
from loyalty.ledger.service._core import (
    Settings,
    _allocate,
    _consume,
    _lapsed,
    _note_due,
    _post,
    _spendable_lots,
    _told,
)


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
    back (newest first), that hold points of the order's lots, with how many each holds.
    A hold or redemption whose points are going back is marked ended first (released,
    captured, returned), so it is not one of them: its points are no longer held."""

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
    settings: Settings,
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
            **_told(wallet, now, actor),
            points=points,
            reason=reason,
        ),
    )


def _release(
    session: Session,
    wallet: Wallet,
    settings: Settings,
    hold: Hold,
    status: str,
    now: dt.datetime,
    actor: str | None,
) -> None:
    restoration = _restoration(
        session, wallet, settings, ("hold", hold.id), hold.entry_id, hold.points, now
    )
    # Ended before its points go back: debt they repay is re-pointed onto the holds and
    # claims still open (`_consumers_of`), never onto this one, whose points are back.
    hold.status = status
    hold.closed_at = now
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
    _hold_changed(session, wallet, hold, now, actor)


def _hold_changed(
    session: Session, wallet: Wallet, hold: Hold, now: dt.datetime, actor: str | None
) -> None:
    publish(
        session,
        events.HoldChanged(
            **_told(wallet, now, actor),
            hold_id=hold.id,
            points=hold.points,
            captured_points=hold.captured_points,
            status=hold.status,
        ),
    )
