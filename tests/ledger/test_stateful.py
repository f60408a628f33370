"""A stateful property test: random sequences of accrue, refund, redeem, hold, capture,
release, adjust, time travel and the job, run against the real service on PostgreSQL and
against a small in-memory model; balances, lots and history must agree after every step, and
the invariants must hold."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from fractions import Fraction

from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.errors import (
    CaptureExceedsHoldError,
    HoldNotHeldError,
    InsufficientPointsError,
    RefundExceedsOrderError,
)
from loyalty.ledger import service
from loyalty.ledger.invariants import verify
from loyalty.ledger.models import Lot, Wallet
from loyalty.members import service as members_service
from tests.ledger.conftest import CLIENT, START

FAR = dt.datetime.max.replace(tzinfo=dt.UTC)
PENDING = dt.timedelta(days=14)
EXPIRY_MONTHS = 2


def expiry(earned: dt.datetime) -> dt.datetime:
    from loyalty.ledger.rules import expiry_for

    result = expiry_for(earned, "rolling", EXPIRY_MONTHS)
    assert result is not None
    return result


def share(points: int, part: int, whole: int) -> int:
    return int((Fraction(points * part, whole) + Fraction(1, 2)) // 1)


@dataclass
class ModelLot:
    id: int
    amount: int
    remaining: int
    activates_at: dt.datetime
    expires_at: dt.datetime
    order: str | None
    activated: bool = False
    expired: bool = False


@dataclass
class ModelHold:
    id: str
    points: int
    expires_at: dt.datetime
    taken: list[tuple[int, int]]
    status: str = "held"


@dataclass
class ModelOrder:
    id: str
    total: int
    points: int
    refunded: int = 0
    reversed: int = 0


@dataclass
class Model:
    """The rules of DESIGN.md section 5 for one wallet, written as plainly as possible."""

    refund_policy: str
    available: int = 0
    pending: int = 0
    held: int = 0
    debt: int = 0
    earned: int = 0
    lots: list[ModelLot] = field(default_factory=list)
    holds: dict[str, ModelHold] = field(default_factory=dict)
    orders: dict[str, ModelOrder] = field(default_factory=dict)
    history: list[tuple[str, int]] = field(default_factory=list)

    def spendable(self) -> list[ModelLot]:
        lots = [lot for lot in self.lots if lot.activated and not lot.expired and lot.remaining]
        return sorted(lots, key=lambda lot: (lot.expires_at or FAR, lot.id))

    def consume(self, points: int) -> list[tuple[int, int]]:
        taken = []
        for lot in self.spendable():
            if not points:
                break
            take = min(lot.remaining, points)
            lot.remaining -= take
            points -= take
            taken.append((lot.id, take))
        assert points == 0
        return taken

    def lot(self, lot_id: int) -> ModelLot:
        return next(lot for lot in self.lots if lot.id == lot_id)

    def credit(self, points: int) -> None:
        """Points became spendable (already in the lots): repay debt first."""
        repay = min(self.debt, max(0, self.available + self.debt + points))
        self.available += points
        self.debt -= repay
        self.consume(repay)

    def new_lot(
        self,
        points: int,
        activates: dt.datetime,
        earned: dt.datetime,
        order: str | None,
        now: dt.datetime,
    ) -> None:
        lot = ModelLot(len(self.lots) + 1, points, points, activates, expiry(earned), order)
        lot.activated = activates <= now
        self.lots.append(lot)

    def restore(self, taken: list[tuple[int, int]], points: int, now: dt.datetime) -> int:
        """Give points back to the lots they came from; points whose lot expired meanwhile
        are not given back: returns how many."""
        late = 0
        for lot_id, took in reversed(taken):
            if not points:
                break
            back = min(took, points)
            lot = self.lot(lot_id)
            if lot.expired or lot.expires_at <= now:
                late += back
            else:
                lot.remaining += back
            points -= back
        return late

    def release(self, hold: ModelHold, status: str, now: dt.datetime) -> None:
        late = self.restore(hold.taken, hold.points, now)
        if late:
            self.history.append(("expiry", -late))
        back = hold.points - late
        self.held -= hold.points
        if back:
            self.history.append(("release", back))
            self.credit(back)
        hold.status = status

    def settle(self, now: dt.datetime) -> None:
        for hold in sorted(self.holds.values(), key=lambda h: (h.expires_at, h.id)):
            if hold.status == "held" and hold.expires_at <= now:
                self.release(hold, "expired", now)
        for lot in sorted(self.lots, key=lambda lot: (lot.activates_at, lot.id)):
            if not lot.activated and lot.activates_at <= now:
                lot.activated = True
                if lot.remaining:
                    self.history.append(("activation", lot.remaining))
                    self.pending -= lot.remaining
                    self.credit(lot.remaining)
        for lot in sorted(self.lots, key=lambda lot: (lot.expires_at, lot.id)):
            if lot.activated and not lot.expired and lot.remaining and lot.expires_at <= now:
                self.history.append(("expiry", -lot.remaining))
                self.available -= lot.remaining
                lot.remaining = 0
                lot.expired = True


class LedgerMachine(RuleBasedStateMachine):
    app: Flask
    session: Session
    clock: FrozenClock

    orders = Bundle("orders")
    holds = Bundle("holds")

    @initialize(refund_policy=st.sampled_from(["within_balance", "allow_negative"]))
    def start(self, refund_policy: str) -> None:
        self.clock.set(START)
        service.update_settings(
            self.session,
            changes={
                "refund_policy": refund_policy,
                "expiry_policy": "rolling",
                "expiry_months": EXPIRY_MONTHS,
                "pending_days": 14,
            },
            actor="test",
        )
        LedgerMachine.counter += 1
        member, _ = members_service.enroll_member(
            self.session, external_id=f"stateful-{LedgerMachine.counter}"
        )
        self.member_id = member.id
        self.model = Model(refund_policy)

    counter = 0

    def now(self) -> dt.datetime:
        return self.clock.now()

    # --- rules ---------------------------------------------------------------------------

    @rule(target=orders, total=st.integers(0, 30_000), age=st.sampled_from([0, 3, 20]))
    def accrue(self, total: int, age: int) -> str:
        now = self.now()
        self.model.settle(now)
        LedgerMachine.counter += 1
        order_id = f"o-{LedgerMachine.counter}"
        placed = now - dt.timedelta(days=age)
        result = service.accrue_order(
            self.session,
            client_id=CLIENT,
            order_id=order_id,
            member_id=self.member_id,
            total=total,
            currency="USD",
            placed_at=placed,
        ).body
        points = total // 100
        assert result["points"] == points
        self.model.orders[order_id] = ModelOrder(order_id, total, points)
        if points:
            active = placed + PENDING <= now
            self.model.history.append(("accrual", points))
            self.model.earned += points
            self.model.new_lot(points, placed + PENDING, placed, order_id, now)
            if active:
                self.model.credit(points)
            else:
                self.model.pending += points
        return order_id

    @rule(order_id=orders, fraction=st.sampled_from([Fraction(1, 3), Fraction(1, 2), Fraction(1)]))
    def refund(self, order_id: str, fraction: Fraction) -> None:
        model = self.model
        now = self.now()
        model.settle(now)
        order = model.orders[order_id]
        amount = int((order.total - order.refunded) * fraction)
        LedgerMachine.counter += 1
        try:
            result = (
                service.refund_order(
                    self.session,
                    client_id=CLIENT,
                    order_id=order_id,
                    refund_id=f"r-{LedgerMachine.counter}",
                    amount=amount,
                ).body
                if amount > 0
                else None
            )
        except RefundExceedsOrderError:
            result = None
        if amount <= 0:
            return
        assert result is not None
        points = share(order.points, order.refunded + amount, order.total) - share(
            order.points, order.refunded, order.total
        )
        points = max(0, min(points, order.points - order.reversed))
        order.refunded += amount
        order.reversed += points
        assert result["points_reversed"] == points
        if not points:
            return
        left = points
        own = sorted(
            (lot for lot in model.lots if lot.order == order_id and lot.remaining),
            key=lambda lot: (lot.activated, lot.id),
        )
        for lot in own:
            take = min(lot.remaining, left)
            lot.remaining -= take
            left -= take
            if lot.activated:
                model.available -= take
            else:
                model.pending -= take
        others = [lot for lot in model.spendable() if lot.order != order_id]
        for lot in others:
            take = min(lot.remaining, left)
            lot.remaining -= take
            left -= take
            model.available -= take
        debt = left if model.refund_policy == "allow_negative" else 0
        shortfall = left - debt
        model.available -= debt
        model.debt += debt
        model.earned -= points
        model.history.append(("reversal", -(points - shortfall)))
        assert result["shortfall"] == shortfall

    @rule(points=st.integers(1, 150))
    def redeem(self, points: int) -> None:
        now = self.now()
        self.model.settle(now)
        try:
            service.redeem(self.session, member_id=self.member_id, points=points)
        except InsufficientPointsError:
            assert points > self.model.available
            return
        assert points <= self.model.available
        self.model.history.append(("redemption", -points))
        self.model.available -= points
        self.model.consume(points)

    @rule(target=holds, points=st.integers(1, 150), minutes=st.sampled_from([1, 60, 3000]))
    def hold(self, points: int, minutes: int) -> str:
        now = self.now()
        self.model.settle(now)
        try:
            result = service.place_hold(
                self.session, member_id=self.member_id, points=points, expires_in=60 * minutes
            )
        except InsufficientPointsError:
            assert points > self.model.available
            return "none"
        assert points <= self.model.available
        self.model.history.append(("hold", -points))
        self.model.available -= points
        self.model.held += points
        taken = self.model.consume(points)
        hold = ModelHold(result.hold.id, points, now + dt.timedelta(minutes=minutes), taken)
        self.model.holds[hold.id] = hold
        return hold.id

    @rule(hold_id=consumes(holds), part=st.sampled_from([None, 1, 2]))
    def capture(self, hold_id: str, part: int | None) -> None:
        if hold_id == "none":
            return
        model = self.model
        now = self.now()
        model.settle(now)
        hold = model.holds[hold_id]
        points = None if part is None else max(1, hold.points // part)
        try:
            service.capture_hold(self.session, hold_id=hold_id, points=points)
        except HoldNotHeldError as error:
            assert hold.status != "held"
            assert error.data["hold_status"] == hold.status
            return
        except CaptureExceedsHoldError:
            raise AssertionError("capture within the hold was refused") from None
        assert hold.status == "held"
        captured = hold.points if points is None else points
        rest = hold.points - captured
        late = model.restore(hold.taken, rest, now)
        if late:
            model.history.append(("expiry", -late))
        model.history.append(("capture", -captured))
        model.held -= hold.points
        model.credit(rest - late)
        hold.status = "captured"

    @rule(hold_id=consumes(holds))
    def release(self, hold_id: str) -> None:
        if hold_id == "none":
            return
        now = self.now()
        self.model.settle(now)
        hold = self.model.holds[hold_id]
        try:
            service.release_hold(self.session, hold_id=hold_id)
        except HoldNotHeldError:
            assert hold.status != "held"
            return
        assert hold.status == "held"
        self.model.release(hold, "released", now)

    @rule(points=st.integers(-60, 60).filter(bool))
    def adjust(self, points: int) -> None:
        model = self.model
        now = self.now()
        model.settle(now)
        try:
            service.adjust(self.session, member_id=self.member_id, points=points, reason="prop")
        except InsufficientPointsError:
            assert -points > model.available
            return
        model.history.append(("adjustment", points))
        if points > 0:
            model.new_lot(points, now, now, None, now)
            model.credit(points)
        else:
            model.available += points
            model.consume(-points)

    @rule(hours=st.sampled_from([1, 12, 24 * 3, 24 * 15, 24 * 45]))
    def travel(self, hours: int) -> None:
        self.clock.advance(dt.timedelta(hours=hours))

    @rule()
    def run_jobs(self) -> None:
        while service.settle_due_batch(self.session, batch_size=500):
            pass
        self.model.settle(self.now())

    # --- comparisons ---------------------------------------------------------------------

    @invariant()
    def agrees_with_the_model(self) -> None:
        if not hasattr(self, "model"):
            return
        model = self.model
        report = service.get_balance(self.session, self.member_id)
        model.settle(self.now())
        assert (report.available, report.pending, report.held, report.lifetime_earned) == (
            model.available,
            model.pending,
            model.held,
            model.earned,
        )
        wallet = self.session.scalar(select(Wallet).where(Wallet.member_id == self.member_id))
        if wallet is None:
            assert model.lots == []
            return
        assert wallet.debt == model.debt
        lots = self.session.scalars(
            select(Lot).where(Lot.wallet_id == wallet.id).order_by(Lot.id)
        ).all()
        assert [(lot.amount, lot.remaining, lot.activated_at is not None) for lot in lots] == [
            (lot.amount, lot.remaining, lot.activated) for lot in model.lots
        ]
        entries = service.list_entries(self.session, self.member_id, limit=200).items
        assert [(e.kind, e.points) for e in reversed(entries)] == model.history[-200:]
        assert verify(self.session) == []


def test_ledger_agrees_with_its_model(app: Flask, session: Session, clock: FrozenClock) -> None:
    LedgerMachine.app = app
    LedgerMachine.session = session
    LedgerMachine.clock = clock
    machine = LedgerMachine.TestCase
    machine.settings = settings(
        max_examples=40,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        derandomize=True,
    )
    machine().runTest()
