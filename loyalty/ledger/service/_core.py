"""Private: what every change to points shares. Locking wallets (in member-id order), writing
an entry with its cached balances (`_post`), lots and allocations, consuming lots
soonest-expiring first, the due marker and activity (`_touch`), the expiry policy applied to a
lot or a wallet, and the balance snapshot that events carry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from functools import cache
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, bindparam, literal_column, select, true
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.attributes import flag_modified

from loyalty import clock, configcache
from loyalty.db import dialect_insert, new_id, settings_row, transaction_scoped
from loyalty.errors import MemberNotActiveError
from loyalty.ledger import events, ports, rules
from loyalty.ledger.errors import HoldNotFoundError
from loyalty.ledger.models import (
    Allocation,
    Entry,
    Hold,
    Lot,
    Order,
    ProgramSettings,
    Refund,
    Wallet,
)
from loyalty.members import service as members_service
from loyalty.members.models import Member


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
class Settings:
    """The programme's core settings as changes to points read them: a snapshot of the
    `ProgramSettings` row shared by the transactions of a process that see the same
    configuration version (`loyalty.configcache`; the sweep's cursor is not part of it)."""

    earn_rate: Decimal
    rounding: str
    pending_days: int
    expiry_policy: str
    expiry_months: int
    expiry_period: str
    refund_policy: str
    hold_timeout_seconds: int
    timezone: str
    max_order_age_days: int
    updated_at: dt.datetime
    updated_by: str | None


_SETTINGS_SNAPSHOT = tuple(field.name for field in fields(Settings))


def _load_settings(session: Session) -> Settings:
    # Changes this transaction made and has not written yet go first: writing them marks the
    # configuration changed, so what is read then is this transaction's own, never shared.
    session.flush()
    row = settings_row(session, ProgramSettings)
    return Settings(**{name: getattr(row, name) for name in _SETTINGS_SNAPSHOT})


def current_settings(session: Session) -> Settings:
    """The programme's core settings (one read per process and configuration version)."""
    return configcache.cached(session, "ledger.settings", _load_settings)


def _balance_after(wallet: Wallet) -> events.BalanceAfter:
    return events.BalanceAfter(wallet.available, wallet.pending, wallet.held)


# The reasons of the entries the due work writes (in Python, and in SQL: `_bulk`).
ACTIVATION_REASON = "Return window over"
EXPIRY_REASON = "Points reached their expiry date"


def _told(wallet: Wallet, now: dt.datetime, actor: str | None) -> dict[str, Any]:
    """What every points event says first: when, whose, the balance right after, and who."""
    return {
        "occurred_at": now,
        "member_id": wallet.member_id,
        "balance": _balance_after(wallet),
        "actor": actor,
    }


def _expiry(settings: Settings, activated_at: dt.datetime) -> dt.datetime | None:
    """When points activating at ``activated_at`` expire under the programme's policy."""
    return rules.expiry_for(
        activated_at,
        settings.expiry_policy,
        settings.expiry_months,
        settings.expiry_period,
        settings.timezone,
    )


def _deadline(settings: Settings, last_activity_at: dt.datetime) -> dt.datetime:
    """The inactivity deadline after activity at ``last_activity_at``."""
    return rules.inactivity_deadline(last_activity_at, settings.expiry_months, settings.timezone)


def entry_public_id(entry: Entry) -> str:
    return f"ent_{entry.id}"


def _member(session: Session, member_id: str) -> Member:
    return members_service.get_member(session, member_id)


def _require_active(member: Member) -> None:
    if member.status != "active":
        raise MemberNotActiveError(member.id, member.status)


@dataclass(frozen=True)
class _Locked:
    """What a change to a member's points needs, read in the round trip that locks the
    wallet (the wallet, the member), and the programme's settings at the configuration
    version that round trip read."""

    wallet: Wallet
    member: Member
    settings: Settings


# session.info: member id -> what `_lock_wallets` read for the wallet this transaction
# locked. Forgotten when the transaction ends, and on any rollback (one to a savepoint
# releases the locks taken since).
_LOCKED = transaction_scoped("loyalty.locked_wallets")


def locked_wallet(session: Session, member_id: str) -> Wallet | None:
    """The member's wallet if this transaction holds its lock (its balances are current)."""
    locked: _Locked | None = session.info.get(_LOCKED, {}).get(member_id)
    return locked.wallet if locked is not None else None


def _lock_wallet(session: Session, member_id: str) -> _Locked:
    """Lock the member's wallet for this transaction (creating it on first use) and read the
    member with it, and the settings. Raises `MemberNotFoundError`.
    """
    return _lock_wallets(session, [member_id])[member_id]


def _lock_wallets(
    session: Session, member_ids: Sequence[str | None], *, skip_locked: bool = False
) -> dict[str, _Locked]:
    """Lock the wallets of these members (``None`` is skipped), creating missing ones, in
    member-id order: every operation that takes more than one wallet takes them in this
    order, so two of them never wait on each other in a circle. Reads the members and the
    configuration's version in the same round trip (the settings come from the process's
    cache at that version). With ``skip_locked`` (reads), wallets that other
    transactions hold are left out rather than waited for. Raises `MemberNotFoundError`."""
    ids = sorted({member_id for member_id in member_ids if member_id is not None})
    held: dict[str, _Locked] = session.info.get(_LOCKED, {})
    if all(member_id in held for member_id in ids):
        # This transaction holds these locks already, and every change to the wallets went
        # through this session: what it read then is current.
        return {member_id: held[member_id] for member_id in ids}
    query = _lock_query(len(ids) > 1, skip_locked)
    parameters = {"member_ids": ids} if len(ids) > 1 else {"member_id": ids[0]}

    def read() -> dict[str, _Locked]:
        return {row[1].id: _remember(session, *row) for row in session.execute(query, parameters)}

    rows = read()
    if skip_locked:
        return rows
    missing = [member_id for member_id in ids if member_id not in rows]
    if missing:
        for member_id in missing:
            _member(session, member_id)  # raises when there is no such member
        _open_wallets(session, missing)
        rows = read()
    return rows


def _open_wallets(session: Session, member_ids: Sequence[str]) -> None:
    """Create the empty wallets of these members, unless they have one (one statement)."""
    now = clock.now()
    insert = dialect_insert(session)
    session.execute(
        insert(Wallet)
        .values(
            [
                {
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
                for member_id in member_ids
            ]
        )
        .on_conflict_do_nothing()
    )


def _remember(session: Session, wallet: Wallet, member: Member, version: int) -> _Locked:
    """Note what the lock statement read (for this transaction's later locks and the
    configuration cache), with the settings at the configuration's version it read."""
    configcache.note_version(session, version)
    locked = _Locked(wallet, member, current_settings(session))
    session.info.setdefault(_LOCKED, {})[member.id] = locked
    return locked


def _lock_wallet_for_order(
    session: Session,
    member_id: str,
    channel_id: str,
    order_id: str,
    placed_at: dt.datetime | None = None,
) -> tuple[_Locked, bool]:
    """`_lock_wallet`, and whether the order ``(channel_id, order_id)`` is known not to
    exist, asked in the same round trip. Known only when that answer is as current as the
    lock: the statement reads the orders as of its start, and a report of this order that
    held the lock meanwhile committed after that; but it changed the wallet (every accrual
    does), so the wallet row locked is then newer than the one the statement started with,
    and the caller must look for the order again. (SQLite takes its write lock before
    reading.) The lock's companions read along (``placed_at``: when the order was placed,
    if not now)."""
    if member_id in session.info.get(_LOCKED, {}):
        return _lock_wallet(session, member_id), False
    companions = ports.lock_companions.wanted(session)
    parameters: dict[str, Any] = {
        "member_id": member_id,
        "channel_id": channel_id,
        "order_id": order_id,
    }
    if companions:
        moment = parameters[ports.LOCK_NOW] = clock.now()
        for companion in companions:
            if companion.parameters is not None:
                parameters |= companion.parameters(session, member_id, placed_at or moment)
    query = _order_lock_query(session.get_bind().dialect.name, companions)
    row = session.execute(query, parameters).one_or_none()
    if row is not None and not row[_UNCHANGED]:
        # It waited for the lock while another transaction changed the wallet, so what it
        # read along is as of before that. The same statement again, the lock ours (nothing
        # can change the wallet now), reads it all as current in one round trip, where each
        # area would read its part again (a hot member's every order waits).
        row = session.execute(query, parameters).one_or_none()
    if row is None:  # the member's first order creates the wallet
        return _lock_wallet(session, member_id), False
    wallet, member, version, existing_order, unchanged, *values = row
    for companion in companions:
        mine, values = tuple(values[: companion.width]), values[companion.width :]
        companion.keep(session, member_id, mine, bool(unchanged))
    locked = _remember(session, wallet, member, version)
    return locked, existing_order is None and bool(unchanged)


# The column of `_order_lock_query` that says whether the wallet row locked is the one the
# statement's snapshot saw.
_UNCHANGED = 4


@cache
def _order_lock_query(dialect: str, companions: tuple[ports.Companion, ...]) -> Select[Any]:
    """The wallet's lock statement with the order key's row id, whether the wallet row it
    locked is the one its snapshot saw (PostgreSQL's ``xmin``: the transaction that wrote
    the row version), and the companions' rows."""
    orders = Order.__table__
    existing = (
        select(orders.c.id)
        .where(
            orders.c.channel_id == bindparam("channel_id"),
            orders.c.order_id == bindparam("order_id"),
        )
        .scalar_subquery()
    )
    if dialect == "postgresql":
        seen = aliased(Wallet, name="seen")
        unchanged: Any = literal_column("wallets.xmin") == (
            select(literal_column("seen.xmin")).where(seen.id == Wallet.id).scalar_subquery()
        )
    else:
        unchanged = true()
    query = _lock_query(False, False).add_columns(existing, unchanged)
    for companion in companions:
        query = companion.extend(query, cast(ColumnElement[str], Wallet.member_id))
    return query


@cache
def _lock_query(several: bool, skip_locked: bool) -> Select[Any]:
    """The statement that locks wallets, built once: every accrual sends it, and building a
    statement (and its cache key) costs about as much CPU as sending it."""
    return (
        # The configuration's version comes along, so that the programme's cached
        # configuration is checked without a round trip of its own (loyalty.configcache).
        select(Wallet, Member, configcache.version_column())
        .join(Member, Member.id == Wallet.member_id)
        .where(
            Wallet.member_id.in_(bindparam("member_ids", expanding=True))
            if several
            else Wallet.member_id == bindparam("member_id")
        )
        .order_by(Wallet.member_id)
        .with_for_update(of=Wallet, skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )


def _written(wallet: Wallet) -> None:
    """Make this transaction write the wallet's row (at the next flush, with whatever else
    changes it), for a change under the wallet's lock that may move no balance: a check-in,
    a refund of an order that earned nothing. An order waiting for the lock then finds the
    wallet row changed and reads again what its lock statement read along (the member's tier
    row, activity, points towards the caps: `_lock_wallet_for_order`)."""
    wallet.updated_at = clock.now()
    flag_modified(wallet, "updated_at")  # an UPDATE even when the clock has not moved


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


def _post(session: Session, wallet: Wallet, **movement: Any) -> Entry:
    """Write one entry and move the wallet's cached balances with it (``movement``: the
    keywords of `_entry_values`).

    An entry that makes points spendable (``repays_debt``) repays the wallet's debt from them
    in the same entry, all but ``keep`` of them (taken at once by a refund's shortfall); the
    caller then takes the repaid points from the lots with `_repay`.
    """
    entry = Entry(**_entry_values(wallet, **movement))
    session.add(entry)
    session.flush()
    return entry


def _entry_values(
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
    keep: int = 0,
    refund: Refund | None = None,
) -> dict[str, Any]:
    """Move the wallet's cached balances for one entry (as `_post` explains) and return the
    entry's column values, its id aside."""
    repay = 0
    if repays_debt and wallet.debt:
        repay = min(wallet.debt, max(0, wallet.available + wallet.debt + available - keep))
        debt -= repay
        if repay:
            reason = (reason + "; " if reason else "") + f"repaid {repay} points of debt"
    wallet.available += available
    wallet.pending += pending
    wallet.held += held
    wallet.debt += debt
    wallet.lifetime_earned += earned
    wallet.updated_at = now
    return {
        "wallet_id": wallet.id,
        "member_id": wallet.member_id,
        "kind": kind,
        "points": points,
        "available_delta": available,
        "pending_delta": pending,
        "held_delta": held,
        "debt_delta": debt,
        "earned_delta": earned,
        "counter_account": counter_account,
        "counter_amount": -(available + pending + held),
        "reference_type": reference[0] if reference else None,
        "reference_id": reference[1] if reference else None,
        "external_reference": external_reference,
        "reason": reason,
        "actor": actor,
        "refund_pk": refund.id if refund is not None else None,
        "balance_available": wallet.available,
        "balance_pending": wallet.pending,
        "balance_held": wallet.held,
        "created_at": now,
    }


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
    settings: Settings,
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
        expires_at=_expiry(settings, now),
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


def _count_order(wallet: Wallet, money: int, currency: str, orders: int) -> None:
    """Add an order's money (minor units; less for a refund) to the wallet's spend, in major
    units, and ``orders`` (1 for an order placed, -1 for one now wholly refunded, else 0) to
    its order count (invariant 8)."""
    wallet.spend = rules.EXACT.add(wallet.spend, rules.major_units(money, currency))
    wallet.order_count += orders


def _touch(wallet: Wallet, settings: Settings, now: dt.datetime) -> None:
    """The member was active (earned or spent): under the inactivity policy, points now
    expire that much later."""
    wallet.last_activity_at = now
    if settings.expiry_policy == "inactivity":
        _note_due(wallet, _deadline(settings, now))


def _last_activity(wallet: Wallet) -> dt.datetime:
    """When the member last earned or spent; a wallet only ever credited by hand counts from
    its creation."""
    return wallet.last_activity_at or wallet.created_at


def _lapsed(wallet: Wallet, settings: Settings, now: dt.datetime) -> bool:
    """Whether, under the inactivity policy, the member's deadline has passed: all their
    points have expired (or expire when next settled)."""
    return (
        settings.expiry_policy == "inactivity"
        and _deadline(settings, _last_activity(wallet)) <= now
    )


def _is_due(wallet: Wallet, now: dt.datetime) -> bool:
    """Whether some of the wallet's points activate or expire (or holds time out) by now."""
    return wallet.next_due_at is not None and wallet.next_due_at <= now


def _aware(moment: dt.datetime) -> dt.datetime:
    """Aggregates bypass the column type on SQLite, so a MIN() may come back naive."""
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
