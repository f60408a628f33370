"""Tier ladder, qualification, upgrades, downgrades, manual assignment and history.

How a member's tier is decided (the pure parts are in `loyalty.tiers.rules`):

- **Computed tier.** The metric of the policy (points earned, spend in major currency units,
  or orders, as `loyalty.ledger.service.activity` counts them) measured over the policy's
  window as of now. A member reaching a higher tier's threshold is upgraded at once, inside the
  accrual that got them there (`after_accrual`), and the tier's qualification period starts
  then. A member without a row (no accrual since the ladder existed) holds the lowest tier when
  its threshold is 0, else no tier.
- **Review.** A computed tier is reviewed ``grace_days`` after its period ends (1 January
  00:00 UTC after the year it was reached or renewed in, for ``calendar_year``; twelve months
  after it was reached or renewed, for ``rolling_12_months``; never, for ``lifetime``). What
  "qualifies at review" measures: the larger of (a) the metric over the window that ends with
  the period (the calendar year just ended; the twelve months of the period) and (b) the
  metric over the policy's window as of the scheduled review moment (so activity in the grace
  days counts), whenever the job actually runs. Reaching the tier's retain threshold (its
  threshold when none is set) renews it for the next period, which starts at the old period's
  end; otherwise the member goes down one rank (``one_step``; or to the tier the value still
  qualifies for, when that is higher) or straight to the tier the value qualifies for
  (``recompute``), and the new tier's period starts at the old period's end. A tier kept with
  a metric of 0 is never reviewed.
- **Manual assignment.** A tier assigned by hand, with a reason and an optional end, wins over
  the computed tier until it ends (ended by `end_assignment`, or by the job once ``until`` has
  passed; reads treat a passed ``until`` as ended at once). The computed tier goes on being
  upgraded and reviewed underneath, and is what the member falls back to.
- **Paid tier.** A tier bought through a Stripe subscription (`loyalty.billing` grants it
  with `grant_paid_within` while the subscription is paid, and ends it with `end_paid_within`
  or lets ``paid_until`` pass). Paid and computed tiers combine: the member holds the higher
  of the two; a manual assignment wins over both while it lasts.
- **Ladder and policy changes** never re-evaluate members in the request: they raise the
  ladder version, and `run_due` re-evaluates every member in batches. Upgrades apply then;
  nobody is downgraded except at a review, whose date is recomputed under the new policy (a
  review date that the new policy puts in the past moves to the first period end still ahead).

History rows of computed changes (upgrade, downgrade, renewal) name the computed tier before
and after; those of manual assignments (manual, manual_ended) name the effective tier before
and after.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from loyalty import clock, configcache
from loyalty.audit import service as audit_service
from loyalty.bus import publish
from loyalty.db import (
    Page,
    RowVersion,
    UTCDateTime,
    dialect_insert,
    keyset_page,
    retrying,
    settings_row,
    transaction_scoped,
    unit_of_work,
)
from loyalty.errors import InvalidFieldError
from loyalty.ledger import ports as ledger_ports
from loyalty.ledger import service as ledger_service
from loyalty.ledger.events import BonusCredited, OrderRecorded
from loyalty.members import service as members_service
from loyalty.members.models import Member
from loyalty.ports import Ports
from loyalty.tiers import rules
from loyalty.tiers.errors import (
    BaseTierHeldError,
    NoManualTierError,
    TierExistsError,
    TierInUseError,
    TierLadderOrderError,
    TierNotFoundError,
    TierPriceTakenError,
    TierRankTakenError,
    TierReferencedError,
)
from loyalty.tiers.events import TierChanged
from loyalty.tiers.models import MemberTier, Tier, TierChange, TierSettings

JOB_ACTOR = "jobs"
TIER_FIELDS = (
    "code",
    "name",
    "rank",
    "threshold",
    "retain_threshold",
    "benefits",
    "points_multiplier",
    "stripe_price_id",
)
# Changing these moves members between tiers: the job re-evaluates everyone.
QUALIFYING_FIELDS = ("rank", "threshold", "retain_threshold")
POLICY_FIELDS = ("metric", "window", "grace_days", "downgrade")

# The areas above that refer to tiers by code (earning's campaigns, rewards and perks) each
# answer ``(what, how many)`` for a tier; a tier something refers to cannot be deleted.
tier_references: Ports[[Session, str], tuple[str, int]] = Ports("tiers.tier_references")


@dataclass(frozen=True)
class TierRef:
    """What other packages need to know of a member's tier."""

    code: str
    name: str
    rank: int
    points_multiplier: Decimal


@dataclass(frozen=True)
class MemberTierView:
    """A member's effective tier, where it comes from, and progress to the next one."""

    member_id: str
    tier: Tier | None
    source: str | None  # computed, manual, paid, or None without a tier
    since: dt.datetime | None
    # the review date (computed), the assignment's end (manual) or the paid period's (paid)
    until: dt.datetime | None
    reason: str | None  # a manual assignment's reason
    metric: str
    window: str
    value: int
    progress: rules.Progress | None


# --- reading -------------------------------------------------------------------------------


def _tiers(session: Session) -> list[Tier]:
    return list(session.scalars(select(Tier).order_by(Tier.rank)))


def _rung(tier: Tier) -> rules.Rung:
    return rules.Rung(tier.code, tier.name, tier.rank, tier.threshold, tier.retain_threshold)


def _ref(tier: Tier) -> TierRef:
    return TierRef(tier.code, tier.name, tier.rank, tier.points_multiplier)


@dataclass(frozen=True)
class _Policy:
    """What qualification needs of the policy."""

    metric: str
    window: str
    grace_days: int


@dataclass(frozen=True)
class _Ladder:
    """The ladder (lowest rank first) and the policy, as accruals read them: cached per
    process behind the configuration's version (`loyalty.configcache`)."""

    rungs: tuple[rules.Rung, ...]
    refs: tuple[TierRef, ...]  # the same tiers, in the same order
    threshold_zero_base: bool  # the lowest tier is everyone's until they qualify higher
    policy: _Policy


def _load_ladder(session: Session) -> _Ladder:
    tiers = _tiers(session)
    policy = get_policy(session)
    return _Ladder(
        rungs=tuple(_rung(tier) for tier in tiers),
        refs=tuple(_ref(tier) for tier in tiers),
        threshold_zero_base=bool(tiers) and tiers[0].threshold == 0,
        policy=_Policy(policy.metric, policy.window, policy.grace_days),
    )


_LADDER = "tiers.ladder"


def _ladder(session: Session) -> _Ladder:
    return configcache.cached(session, _LADDER, _load_ladder)


def ladder(session: Session) -> dict[str, TierRef]:
    """The tier ladder by code, lowest rank first."""
    return {ref.code: ref for ref in _ladder(session).refs}


def current_tiers(session: Session, member_ids: list[str]) -> dict[str, TierRef]:
    """The effective tier of each member: an active manual assignment, else the higher of the
    computed tier (the lowest tier, when its threshold is 0, for members the tiers have not
    seen yet) and an active paid tier. Members without a tier are absent. One query, whatever
    the number of members (none for one member whose tier row this transaction has read
    already)."""
    cached = _ladder(session)
    if not member_ids or not cached.refs:
        return {}
    by_code = {ref.code: ref for ref in cached.refs}
    base = cached.refs[0] if cached.threshold_zero_base else None
    if len(member_ids) == 1:
        one = _tier_row(session, member_ids[0])
        rows = {one.member_id: one} if one is not None else {}
    else:
        rows = {
            row.member_id: row
            for row in session.scalars(
                select(MemberTier).where(MemberTier.member_id.in_(member_ids))
            )
        }
    now = clock.now()
    result = {}
    for member_id in member_ids:
        row = rows.get(member_id)
        tier = base
        if row is not None:
            code = row.manual_code if _manual_active(row, now) else row.tier_code
            tier = by_code.get(code) if code else base
            if not _manual_active(row, now) and _paid_active(row, now):
                paid = by_code.get(row.paid_code or "")
                if paid is not None and (tier is None or paid.rank > tier.rank):
                    tier = paid
        if tier is not None:
            result[member_id] = tier
    return result


def list_tiers(session: Session) -> list[Tier]:
    """The ladder, lowest rank first."""
    return _tiers(session)


def get_tier(session: Session, code: str) -> Tier:
    """The tier with this code. Raises `TierNotFoundError`."""
    tier = session.get(Tier, code)
    if tier is None:
        raise TierNotFoundError(code)
    return tier


def tier_for_price(session: Session, price_id: str) -> TierRef | None:
    """The paid tier whose Stripe price is ``price_id``, if any."""
    tier = session.scalar(select(Tier).where(Tier.stripe_price_id == price_id))
    return _ref(tier) if tier is not None else None


def get_policy(session: Session) -> TierSettings:
    """The qualification policy (metric, window, grace days, downgrade mode)."""
    return settings_row(session, TierSettings)


def get_member_tier(session: Session, member_id: str) -> MemberTierView:
    """The member's effective tier, its source and dates, the metric in the current window
    and progress to the next tier. Raises `MemberNotFoundError`."""
    members_service.get_member(session, member_id)
    return _view(session, member_id)


def list_history(
    session: Session, member_id: str, *, limit: int = 50, cursor: str | None = None
) -> Page[TierChange]:
    """The member's tier changes, newest first. Raises `MemberNotFoundError`."""
    members_service.get_member(session, member_id)
    query: Select[TierChange] = (
        select(TierChange).where(TierChange.member_id == member_id).order_by(TierChange.id.desc())
    )
    return keyset_page(
        session, query, TierChange.id, limit, cursor, newest_first=True, numeric=True
    )


# --- the ladder and the policy -------------------------------------------------------------


@retrying
def create_tier(
    session: Session,
    *,
    code: str,
    name: str,
    rank: int,
    threshold: int,
    retain_threshold: int | None = None,
    benefits: str | None = None,
    points_multiplier: Decimal | str | int = Decimal(1),
    stripe_price_id: str | None = None,
    actor: str,
) -> Tier:
    """Add a tier to the ladder. Members move into it when the job re-evaluates them (or at
    their next qualifying accrual). Locks the policy row (ladder changes queue).

    Raises `TierExistsError`, `TierRankTakenError`, `TierLadderOrderError` (thresholds must
    rise with rank), `TierPriceTakenError` (another tier has the Stripe price) and
    `InvalidFieldError` (a code that is not a slug, a multiplier below 1).
    """
    if not rules.is_code(code):
        raise InvalidFieldError(
            "code", "A tier code is a slug of at most 32 characters, e.g. 'gold' or 'vip-2'."
        )
    multiplier = _multiplier(points_multiplier)
    with unit_of_work(session):
        settings = _lock_policy(session)
        if session.get(Tier, code) is not None:
            raise TierExistsError(code)
        _check_rank_free(session, rank, code)
        _check_price_free(session, stripe_price_id, code)
        now = clock.now()
        tier = Tier(
            code=code,
            name=name,
            rank=rank,
            threshold=threshold,
            retain_threshold=retain_threshold,
            benefits=benefits,
            points_multiplier=multiplier,
            stripe_price_id=stripe_price_id,
            created_at=now,
            updated_at=now,
        )
        _check_ladder(session, with_tier=tier)
        session.add(tier)
        session.flush()
        _bump(settings, now, actor)
        audit_service.record(
            session,
            actor=actor,
            action="created",
            entity_type="tier",
            entity_id=code,
            after=_tier_snapshot(tier),
        )
    return tier


@retrying
def update_tier(session: Session, *, code: str, changes: dict[str, Any], actor: str) -> Tier:
    """Change a tier's name, rank, thresholds, benefits or multiplier (the code never changes).
    A change of rank or threshold is applied to members by the job. Locks the policy row.

    Raises `TierNotFoundError`, `TierRankTakenError`, `TierLadderOrderError` and
    `InvalidFieldError`.
    """
    if "points_multiplier" in changes:
        changes = {**changes, "points_multiplier": _multiplier(changes["points_multiplier"])}
    with unit_of_work(session):
        settings = _lock_policy(session)
        tier = get_tier(session, code)
        before = _tier_snapshot(tier)
        if "rank" in changes and changes["rank"] != tier.rank:
            _check_rank_free(session, changes["rank"], code)
        if changes.get("stripe_price_id") not in (None, tier.stripe_price_id):
            _check_price_free(session, changes["stripe_price_id"], code)
        if tier.threshold == 0 and changes.get("threshold", 0) > 0:
            implicit = _implicit_base_holders(session, code)
            if implicit:
                raise BaseTierHeldError(code, implicit)
        for field in TIER_FIELDS[1:]:
            if field in changes:
                setattr(tier, field, changes[field])
        after = _tier_snapshot(tier)
        if after != before:
            now = clock.now()
            tier.updated_at = now
            _check_ladder(session, with_tier=tier)
            session.flush()
            if any(before[f] != after[f] for f in QUALIFYING_FIELDS):
                _bump(settings, now, actor)
        audit_service.record(
            session,
            actor=actor,
            action="updated",
            entity_type="tier",
            entity_id=code,
            before=before,
            after=after,
        )
    return tier


@retrying
def delete_tier(session: Session, *, code: str, actor: str) -> None:
    """Remove a tier that nobody holds. Locks the policy row.

    Raises `TierNotFoundError`, and `TierInUseError` when a member holds it: as computed or
    manual tier (ended or not), or implicitly, being the lowest tier with threshold 0 that
    members the tiers have not seen yet hold.
    """
    with unit_of_work(session):
        settings = _lock_policy(session)
        # Lock the tier: an accrual upgrading a member to it holds a key-share lock until it
        # commits, so its member row is counted below (or the accrual sees the tier gone).
        tier = session.scalar(
            select(Tier)
            .where(Tier.code == code)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if tier is None:
            raise TierNotFoundError(code)
        where = [what for what, count in tier_references(session, code) if count]
        if where:
            raise TierReferencedError(code, where)
        holders = int(
            session.scalar(
                select(func.count())
                .select_from(MemberTier)
                .where(
                    or_(
                        MemberTier.tier_code == code,
                        MemberTier.manual_code == code,
                        MemberTier.paid_code == code,
                    )
                )
            )
            or 0
        )
        holders += _implicit_base_holders(session, code)
        if holders:
            raise TierInUseError(code, holders)
        before = _tier_snapshot(tier)
        session.delete(tier)
        session.flush()
        _bump(settings, clock.now(), actor)
        audit_service.record(
            session,
            actor=actor,
            action="deleted",
            entity_type="tier",
            entity_id=code,
            before=before,
        )


@retrying
def update_policy(session: Session, *, changes: dict[str, Any], actor: str) -> TierSettings:
    """Change the qualification policy. Members are re-evaluated by the job, not here: under
    the new policy upgrades apply at once and review dates are recomputed. Locks the policy
    row."""
    with unit_of_work(session):
        settings = _lock_policy(session)
        before = {field: getattr(settings, field) for field in POLICY_FIELDS}
        audit_service.apply_changes(settings, changes, POLICY_FIELDS)
        after = {field: getattr(settings, field) for field in POLICY_FIELDS}
        if after != before:
            _bump(settings, clock.now(), actor)
        audit_service.record(
            session,
            actor=actor,
            action="updated",
            entity_type="tier_policy",
            entity_id="tiers",
            before=before,
            after=after,
        )
    return settings


# --- manual assignment ---------------------------------------------------------------------


@retrying
def assign_tier(
    session: Session,
    *,
    member_id: str,
    tier: str,
    reason: str,
    until: dt.datetime | None = None,
    actor: str,
) -> MemberTierView:
    """Give the member ``tier`` by hand, until ``until`` (or until ended), replacing any
    earlier assignment; it wins over the computed tier meanwhile. Recorded in the history and
    the audit trail with the reason. Locks the member's tier row.

    Raises `MemberNotFoundError`, and `InvalidFieldError` for an unknown tier or an ``until``
    that is not in the future.
    """
    with unit_of_work(session):
        assign_within(
            session, member_id=member_id, tier=tier, reason=reason, until=until, actor=actor
        )
    return _view(session, member_id)


def assign_within(
    session: Session,
    *,
    member_id: str,
    tier: str,
    reason: str,
    until: dt.datetime | None = None,
    actor: str,
) -> None:
    """`assign_tier` inside the caller's unit of work (a referral's shared tier): the same
    effects, checks and errors, but it neither opens nor commits a transaction."""
    members_service.get_member(session, member_id)
    now = clock.now()
    if not _hold_tier(session, tier):
        raise InvalidFieldError("tier", "No tier on the ladder has this code.")
    if until is not None and until <= now:
        raise InvalidFieldError("until", "Must be in the future.")
    row = _lock_row(session, member_id)
    ladder_ = [_rung(t) for t in _tiers(session)]
    before = _effective_code(row, ladder_, now)
    before_snapshot = _assignment_snapshot(row, now)
    row.manual_code = tier
    row.manual_since = now
    row.manual_until = until
    row.manual_reason = reason
    row.manual_by = actor
    row.updated_at = now
    _set_due(row)
    _log(session, row, "manual", before, tier, None, reason, now, actor)
    audit_service.record(
        session,
        actor=actor,
        action="assigned",
        entity_type="member_tier",
        entity_id=member_id,
        before=before_snapshot,
        after=_assignment_snapshot(row, now),
        reason=reason,
    )


@retrying
def end_assignment(
    session: Session, *, member_id: str, actor: str, reason: str | None = None
) -> MemberTierView:
    """End the member's manual tier now; the computed tier applies again. Locks the member's
    tier row. Raises `MemberNotFoundError`, and `NoManualTierError` when no assignment is
    active."""
    with unit_of_work(session):
        members_service.get_member(session, member_id)
        now = clock.now()
        row = session.scalar(_row_for_update(session, member_id))
        if row is None or not _manual_active(row, now):
            raise NoManualTierError(member_id)
        before_snapshot = _assignment_snapshot(row, now)
        _end_manual(session, row, [_rung(t) for t in _tiers(session)], now, actor, reason)
        audit_service.record(
            session,
            actor=actor,
            action="unassigned",
            entity_type="member_tier",
            entity_id=member_id,
            before=before_snapshot,
            after=None,
            reason=reason,
        )
    return _view(session, member_id)


def grant_paid_within(
    session: Session,
    *,
    member_id: str,
    tier: str,
    until: dt.datetime,
    reference: str,
    actor: str,
) -> None:
    """Give the member the paid ``tier`` until ``until`` (a paid subscription, ``reference``
    its id), inside the caller's unit of work; the member holds the higher of it and the
    computed tier. Extending the same grant writes no history; a new or different grant is
    recorded (kind ``paid``) and told as `TierChanged`. Locks the member's tier row.

    Raises `MemberNotFoundError`, and `InvalidFieldError` for a tier not on the ladder.
    """
    members_service.get_member(session, member_id)
    now = clock.now()
    if not _hold_tier(session, tier):
        raise InvalidFieldError("tier", "No tier on the ladder has this code.")
    row = _lock_row(session, member_id)
    ladder_ = [_rung(t) for t in _tiers(session)]
    before = _effective_code(row, ladder_, now)
    same = _paid_active(row, now) and row.paid_code == tier
    if not same:
        row.paid_since = now
    row.paid_code = tier
    row.paid_until = until
    row.paid_reference = reference
    row.updated_at = now
    _set_due(row)
    if not same:
        after = _effective_code(row, ladder_, now)
        _log(session, row, "paid", before, after, None, f"paid: {reference}", now, actor)


def end_paid_within(session: Session, *, member_id: str, reason: str, actor: str) -> bool:
    """End the member's paid tier now, inside the caller's unit of work (the subscription
    ended or lapsed); returns whether there was one. Recorded (kind ``paid_ended``) and told
    as `TierChanged` when it was still in force. Locks the member's tier row."""
    row = session.scalar(_row_for_update(session, member_id))
    if row is None or row.paid_code is None:
        return False
    now = clock.now()
    _end_paid(session, row, [_rung(t) for t in _tiers(session)], now, actor, reason)
    return True


# --- qualification: on accrual and in the job ----------------------------------------------


def on_points_earned(session: Session, event: OrderRecorded | BonusCredited) -> None:
    """Subscriber: an order was recorded or bonus points credited, the member's wallet
    locked; spend, order counts and earned points grew, so the member may move up."""
    after_accrual(session, member_id=event.member_id, now=event.occurred_at, actor=event.actor)


def after_accrual(session: Session, *, member_id: str, now: dt.datetime, actor: str | None) -> None:
    """Upgrade the member at once when activity now qualifies for a higher computed tier.

    Runs inside the accrual's unit of work (`on_points_earned`), after the order's entry is
    written and with the member's wallet locked; never commits. Without a ladder it costs one query.
    Locks the member's tier row only when there is an upgrade to write.
    """
    cached = _ladder(session)
    if not cached.rungs:
        return
    settings = cached.policy
    value = _value_now(session, member_id, settings, now)
    ladder_ = list(cached.rungs)
    # The target tier is held (key share) until commit so a concurrent delete waits, in the
    # statement that locks the member's row; if a delete got there first, read the ladder
    # again and aim at what is left.
    for attempt in range(3):
        target = rules.qualified_tier(ladder_, value)
        seen = _tier_row(session, member_id)
        if not rules.is_higher(target, _computed(seen, ladder_)):
            return
        assert target is not None
        if attempt == 0 and _move_up_at_once(
            session, member_id, seen, ladder_, target, value, now, actor
        ):
            return
        row = _lock_row_holding(session, member_id, target.code)
        if row is not None:
            break
        ladder_ = [_rung(t) for t in _tiers(session)]
    else:
        return
    if rules.is_higher(target, _computed(row, ladder_)):
        _upgrade(session, row, _computed(row, ladder_), target, settings, value, now, actor)


def run_due(session: Session, *, batch_size: int = 200) -> dict[str, int]:
    """Due tier work for ``loyalty jobs run``: end manual assignments whose time is up, review
    computed tiers whose period (and grace) has ended, then re-evaluate members against a
    changed ladder or policy. Batches of short transactions that skip rows locked by requests
    or other runners (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so several runners share the
    work and each change happens once; a second run finds nothing to do. Returns labelled
    counts."""
    counts: Counter[str] = Counter(
        {
            "tier upgrades": 0,
            "tier downgrades": 0,
            "tier renewals": 0,
            "manual tiers ended": 0,
            "paid tiers ended": 0,
        }
    )
    if session.scalar(select(Tier.code).limit(1)) is None:
        return dict(counts)
    _drain(session, _due_batch, batch_size, counts)
    while _add_rows_batch(session, batch_size=batch_size):
        pass
    _drain(session, _reevaluate_batch, batch_size, counts)
    return dict(counts)


def _drain(
    session: Session,
    batch: Callable[..., tuple[int, Counter[str]]],
    batch_size: int,
    counts: Counter[str],
) -> None:
    """Run ``batch`` until it finds nothing to do, adding up what each batch did once it
    committed (a batch retried after a deadlock counts once)."""
    while True:
        processed, done = batch(session, batch_size=batch_size)
        counts.update(done)
        if not processed:
            return


@retrying
def _due_batch(session: Session, *, batch_size: int) -> tuple[int, Counter[str]]:
    """One transaction: manual ends and reviews of up to ``batch_size`` due members; returns
    how many members it took and what it did."""
    counts: Counter[str] = Counter()
    with unit_of_work(session):
        now = clock.now()
        query = (
            select(MemberTier)
            .where(MemberTier.due_at <= now)
            .order_by(MemberTier.due_at, MemberTier.member_id)
            .limit(batch_size)
        )
        rows = list(session.scalars(_skip_locked(session, query)))
        if not rows:
            return 0, counts
        ladder_ = [_rung(t) for t in _tiers(session)]
        settings = get_policy(session)
        for row in rows:
            if row.manual_until is not None and row.manual_until <= now:
                _end_manual(session, row, ladder_, now, JOB_ACTOR, "assignment ended")
                counts["manual tiers ended"] += 1
            if row.paid_until is not None and row.paid_until <= now:
                _end_paid(session, row, ladder_, now, JOB_ACTOR, "paid period ended")
                counts["paid tiers ended"] += 1
            if row.review_at is not None and row.review_at <= now:
                kind = _review(session, row, ladder_, settings, now)
                if kind is not None:
                    counts[f"tier {kind}s"] += 1
            _set_due(row)
    return len(rows), counts


@retrying
def _add_rows_batch(session: Session, *, batch_size: int) -> int:
    """One transaction: give up to ``batch_size`` members the tiers have not seen yet a row
    (ladder version 0, so that they are re-evaluated next)."""
    with unit_of_work(session):
        now = clock.now()
        unseen = (
            select(Member.id, literal(0), literal(now, UTCDateTime()))
            .outerjoin(MemberTier, MemberTier.member_id == Member.id)
            .where(MemberTier.member_id.is_(None))
            .order_by(Member.id)
            .limit(batch_size)
        )
        insert = dialect_insert(session)
        statement = (
            insert(MemberTier)
            .from_select(["member_id", "ladder_version", "updated_at"], unseen)
            .on_conflict_do_nothing()
            .returning(MemberTier.member_id)
        )
        added = len(session.execute(statement).all())
        session.info.pop(_ROWS, None)  # those members have rows now
    return added


@retrying
def _reevaluate_batch(session: Session, *, batch_size: int) -> tuple[int, Counter[str]]:
    """One transaction: re-evaluate up to ``batch_size`` members against the current ladder
    and policy (upgrades at once; review dates recomputed); returns how many members it took
    and how many it upgraded."""
    counts: Counter[str] = Counter()
    with unit_of_work(session):
        now = clock.now()
        settings = get_policy(session)
        query = (
            select(MemberTier)
            .where(MemberTier.ladder_version < settings.ladder_version)
            .order_by(MemberTier.member_id)
            .limit(batch_size)
        )
        rows = list(session.scalars(_skip_locked(session, query)))
        if not rows:
            return 0, counts
        ladder_ = [_rung(t) for t in _tiers(session)]
        for row in rows:
            current = _computed(row, ladder_)
            value = _value_now(session, row.member_id, settings, now)
            target = rules.qualified_tier(ladder_, value)
            if rules.is_higher(target, current):
                assert target is not None
                _upgrade(session, row, current, target, settings, value, now, JOB_ACTOR)
                counts["tier upgrades"] += 1
            elif row.tier_code is not None and not (
                row.review_at is not None and row.review_at <= now
            ):
                # A review already due is left to the review; others follow the new policy.
                row.since, row.review_at = rules.next_review(
                    settings.window, row.since, settings.grace_days, current, now
                )
                _set_due(row)
            row.ladder_version = settings.ladder_version
            row.updated_at = now
    return len(rows), counts


# --- private helpers -----------------------------------------------------------------------


def _manual_active(row: MemberTier, now: dt.datetime) -> bool:
    return row.manual_code is not None and (row.manual_until is None or row.manual_until > now)


def _paid_active(row: MemberTier, now: dt.datetime) -> bool:
    return row.paid_code is not None and row.paid_until is not None and row.paid_until > now


def _computed(row: MemberTier | None, ladder_: list[rules.Rung]) -> rules.Rung | None:
    """The member's computed tier; the base tier when it has none recorded."""
    if row is not None and row.tier_code is not None:
        return rules.rung(ladder_, row.tier_code)
    return rules.base_tier(ladder_)


def _effective_code(row: MemberTier, ladder_: list[rules.Rung], now: dt.datetime) -> str | None:
    if _manual_active(row, now):
        return row.manual_code
    computed = _computed(row, ladder_)
    if _paid_active(row, now):
        paid = rules.rung(ladder_, row.paid_code)
        if rules.is_higher(paid, computed):
            return paid.code if paid else None
    return computed.code if computed else None


def _measure(
    session: Session,
    member_id: str,
    metric: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> int:
    activity = ledger_service.activity(
        session, member_id, since=since, until=until, measures=(metric,)
    )
    if metric == "points":
        return activity.points_earned
    if metric == "spend":
        return activity.spend
    return activity.orders


def _value_now(
    session: Session, member_id: str, settings: TierSettings | _Policy, now: dt.datetime
) -> int:
    """The metric over the policy's window as of ``now``."""
    since = rules.window_start(settings.window, now)
    return _measure(session, member_id, settings.metric, since, None)


def _upgrade(
    session: Session,
    row: MemberTier,
    current: rules.Rung | None,
    target: rules.Rung,
    settings: TierSettings | _Policy,
    value: int,
    now: dt.datetime,
    actor: str | None,
) -> None:
    """Move the computed tier up to ``target``; its qualification period starts now."""
    row.tier_code = target.code
    row.since = now
    row.review_at = rules.review_date(settings.window, now, settings.grace_days, target)
    row.updated_at = now
    _set_due(row)
    _log(
        session,
        row,
        "upgrade",
        current.code if current else None,
        target.code,
        value,
        None,
        now,
        actor,
    )


def _move_up_at_once(
    session: Session,
    member_id: str,
    seen: MemberTier | None,
    ladder_: list[rules.Rung],
    target: rules.Rung,
    value: int,
    now: dt.datetime,
    actor: str | None,
) -> bool:
    """`_upgrade` of the member's tier row as the wallet's lock read it (``seen``; None: no
    row), in one statement that holds the target tier, writes the row only if it is still the
    version read, and logs the change (PostgreSQL; instead of locking the row, then an UPDATE
    and an INSERT). False when it wrote nothing (the row changed or appeared meanwhile, the
    tier was deleted, the version read is not known): the caller locks the row and decides
    again."""
    version = session.info.get(_SEEN, {}).pop(member_id, _UNKNOWN)
    if version is _UNKNOWN or session.get_bind().dialect.name != "postgresql":
        return False
    current = _computed(seen, ladder_)
    policy = _ladder(session).policy
    review_at = rules.review_date(policy.window, now, policy.grace_days, target)
    ends = (seen.manual_until, seen.paid_until) if seen is not None else ()
    state = {
        "tier_code": target.code,
        "since": now,
        "review_at": review_at,
        "due_at": _due_moment(review_at, *ends),
        "updated_at": now,
    }
    from_code = current.code if current else None
    given = state | {
        "member_id": member_id,
        "seen": version,
        "from_code": from_code,
        "metric_value": value,
        "actor": actor,
    }
    parameters = {f"t_{name}": value_ for name, value_ in given.items()}
    if not session.execute(_move_up_statement(seen is None), parameters).scalar():
        return False
    if seen is None:
        row = dict.fromkeys(column.key for column in MemberTier.__table__.columns)
        row |= state | {"member_id": member_id, "ladder_version": 0}
        # An object of a rolled-back attempt (a savepoint, a retry) may still be in the
        # identity map, expired, while anything refers to it: it is the row now.
        left = session.identity_map.get(session.identity_key(MemberTier, (member_id,)))
        if left is not None:
            for name, value_ in row.items():
                set_committed_value(left, name, value_)
            seen = left
        else:
            seen = MemberTier(**row)
            make_transient_to_detached(seen)
            session.add(seen)  # as the statement inserted it: persistent, nothing to write
    else:
        for name, value_ in state.items():
            set_committed_value(seen, name, value_)
    session.info.setdefault(_ROWS, {})[member_id] = seen
    _tell(session, member_id, "upgrade", from_code, target.code, None, now)
    return True


@cache
def _move_up_statement(created: bool) -> Any:
    """The upgrade's statement of `_move_up_at_once`: with ``created``, the member's row
    inserted (if no other transaction inserted one meanwhile), else updated if its version is
    still ``seen``; the tier held (key share) and the change logged; selects how many rows it
    moved (0 or 1). Parameters: ``t_`` and the column's name (never the name alone:
    SQLAlchemy would add the column to the UPDATE's SET)."""
    table = cast(Table, MemberTier.__table__)
    history = cast(Table, TierChange.__table__)

    def given(name: str, source: Table = table) -> Any:
        return bindparam(f"t_{name}", type_=source.c[name].type)

    held = _held_tier(given("tier_code")).cte("held_tier")
    names = ("tier_code", "since", "review_at", "due_at", "updated_at")
    state = {name: given(name) for name in names}
    member_id = given("member_id")
    if created:
        values = state | {"member_id": member_id, "ladder_version": literal(0)}
        moved: Any = (
            postgresql.insert(table)
            .from_select(list(values), select(*values.values()).where(select(held).exists()))
            .on_conflict_do_nothing()
        )
    else:
        moved = (
            update(table)
            .where(
                table.c.member_id == member_id,
                RowVersion("member_tiers") == bindparam("t_seen"),
                select(held).exists(),
            )
            .values(state)
        )
    moved = moved.returning(table.c.member_id).cte("moved")
    logged = insert(history).from_select(
        ["member_id", "kind", "from_code", "to_code", "metric_value", "at", "actor"],
        select(
            moved.c.member_id,
            literal("upgrade"),
            given("from_code", history),
            state["tier_code"],
            given("metric_value", history),
            state["since"],
            given("actor", history),
        ),
    )
    return select(func.count()).select_from(moved).add_cte(held, logged.cte("logged"))


def _review(
    session: Session,
    row: MemberTier,
    ladder_: list[rules.Rung],
    settings: TierSettings,
    now: dt.datetime,
) -> str | None:
    """Review the computed tier whose period has ended (see the module's docstring for what
    is measured); returns the kind of change (upgrade, downgrade, renewal) or None."""
    current = rules.rung(ladder_, row.tier_code)
    end = rules.period_end(settings.window, row.since) if row.since else None
    review_moment = row.review_at
    if current is None or end is None or review_moment is None:
        row.review_at = None  # nothing to review under the policy now in force
        return None
    ended = _measure(
        session, row.member_id, settings.metric, rules.window_ending(settings.window, end), end
    )
    at_review = _measure(
        session,
        row.member_id,
        settings.metric,
        rules.window_start(settings.window, review_moment),
        review_moment,
    )
    value = max(ended, at_review)
    outcome = rules.review_outcome(ladder_, current, value, settings.downgrade)
    row.tier_code = outcome.tier.code if outcome.tier else None
    row.since = end if outcome.tier else None
    row.review_at = rules.review_date(settings.window, end, settings.grace_days, outcome.tier)
    row.updated_at = now
    new_code = outcome.tier.code if outcome.tier else None
    if row.tier_code is None:
        # A member with no tier recorded holds the base tier, if there is one.
        base = rules.base_tier(ladder_)
        new_code = base.code if base else None
    _log(session, row, outcome.kind, current.code, new_code, value, None, now, JOB_ACTOR)
    return outcome.kind


def _end_manual(
    session: Session,
    row: MemberTier,
    ladder_: list[rules.Rung],
    now: dt.datetime,
    actor: str,
    reason: str | None,
) -> None:
    before = row.manual_code
    row.manual_code = None
    row.manual_since = None
    row.manual_until = None
    row.manual_reason = None
    row.manual_by = None
    row.updated_at = now
    _set_due(row)
    after = _computed(row, ladder_)
    _log(
        session,
        row,
        "manual_ended",
        before,
        after.code if after else None,
        None,
        reason,
        now,
        actor,
    )


def _end_paid(
    session: Session,
    row: MemberTier,
    ladder_: list[rules.Rung],
    now: dt.datetime,
    actor: str,
    reason: str | None,
) -> None:
    """Clear the paid tier; history and `TierChanged` name the effective tier with the paid
    tier and without it (a lapsed grant, which reads already ignored, is told when the job
    clears it)."""
    computed, paid = _computed(row, ladder_), rules.rung(ladder_, row.paid_code)
    if _manual_active(row, now):
        before = row.manual_code
    elif rules.is_higher(paid, computed):
        before = paid.code if paid else None
    else:
        before = computed.code if computed else None
    row.paid_code = None
    row.paid_since = None
    row.paid_until = None
    row.paid_reference = None
    row.updated_at = now
    _set_due(row)
    after = _effective_code(row, ladder_, now)
    _log(session, row, "paid_ended", before, after, None, reason, now, actor)


def _set_due(row: MemberTier) -> None:
    row.due_at = _due_moment(row.review_at, row.manual_until, row.paid_until)


def _due_moment(*moments: dt.datetime | None) -> dt.datetime | None:
    """When the job next has work on a member's tier row: the soonest of its review and the
    ends of its manual and paid tiers (None: none of them)."""
    known = [moment for moment in moments if moment is not None]
    return min(known) if known else None


def _log(
    session: Session,
    row: MemberTier,
    kind: str,
    from_code: str | None,
    to_code: str | None,
    value: int | None,
    reason: str | None,
    now: dt.datetime,
    actor: str | None,
) -> None:
    session.add(
        TierChange(
            member_id=row.member_id,
            kind=kind,
            from_code=from_code,
            to_code=to_code,
            metric_value=value,
            reason=reason,
            at=now,
            actor=actor,
        )
    )
    _tell(session, row.member_id, kind, from_code, to_code, reason, now)


def _tell(
    session: Session,
    member_id: str,
    kind: str,
    from_code: str | None,
    to_code: str | None,
    reason: str | None,
    now: dt.datetime,
) -> None:
    """Publish the change the history row logs (`TierChanged`)."""
    ranks = {code: ref.rank for code, ref in ladder(session).items()}
    before, after = ranks.get(from_code or "", -1), ranks.get(to_code or "", -1)
    publish(
        session,
        TierChanged(
            occurred_at=now,
            member_id=member_id,
            kind=kind,
            from_tier=from_code,
            to_tier=to_code,
            direction="up" if after > before else "down" if after < before else "same",
            reason=reason,
        ),
    )


def _row_for_update(session: Session, member_id: str) -> Select[MemberTier]:
    return (
        select(MemberTier)
        .where(MemberTier.member_id == member_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


# session.info: the tier rows this transaction has read, by member (None: the member has no
# row; the lowest tier's members have none until they move). An accrual asks twice, pricing
# and qualifying; the session's identity map alone would not answer the second time, as it
# lets go of rows nobody holds.
_ROWS = transaction_scoped("loyalty.tiers.rows")


# session.info: member id -> the version of the member's tier row (`RowVersion`; None: no
# row) that the wallet's lock read, for an upgrade that writes it only if it is unchanged.
_SEEN = transaction_scoped("loyalty.tiers.seen")
_UNKNOWN = object()


def _with_tier_row(query: Select[Any], member_id: ColumnElement[str]) -> Select[Any]:
    return query.add_columns(MemberTier, RowVersion("member_tiers")).outerjoin(
        MemberTier, MemberTier.member_id == member_id
    )


def _keep_row(session: Session, member_id: str, values: tuple[Any, ...], current: bool) -> None:
    """The member's tier row as the accrual's wallet lock read it (None: no row), and its
    version."""
    row, version = values
    if current:
        session.info.setdefault(_ROWS, {})[member_id] = row
        session.info.setdefault(_SEEN, {})[member_id] = version
    elif row is not None:
        session.expire(row)  # read from the statement's snapshot: maybe older than the lock


# Every accrual prices the order with the member's tier and qualifies the member after it:
# the wallet's lock reads the tier row in its statement.
def _may_have_tiers(session: Session) -> bool:
    """Whether the programme has tiers, as far as this process knows without asking."""
    known: _Ladder | None = configcache.peek(session, _LADDER)
    return known is None or bool(known.refs)


LOCK_COMPANION = ledger_ports.Companion(
    "tiers.row", _with_tier_row, 2, _keep_row, wanted=_may_have_tiers
)


def _tier_row(session: Session, member_id: str) -> MemberTier | None:
    """The member's tier row (one query per transaction, even when there is none)."""
    known: dict[str, MemberTier | None] = session.info.setdefault(_ROWS, {})
    if member_id in known:
        return known[member_id]
    row = known[member_id] = session.get(MemberTier, member_id)
    return row


def _lock_row(session: Session, member_id: str) -> MemberTier:
    """Lock the member's tier row for this transaction, creating it on first use: one
    statement (an upsert whose conflict branch locks the existing row), read afresh."""
    statement = _row_upsert(session, member_id).returning(MemberTier)
    row = session.scalars(statement, execution_options={"populate_existing": True}).one()
    session.info.setdefault(_ROWS, {})[member_id] = row
    return row


def _lock_row_holding(session: Session, member_id: str, code: str) -> MemberTier | None:
    """`_hold_tier` and `_lock_row` in one statement (PostgreSQL): the member's tier row,
    locked, or None when the tier ``code`` is gone (the row is locked all the same)."""
    if session.get_bind().dialect.name != "postgresql":
        return _lock_row(session, member_id) if _hold_tier(session, code) else None
    held = _held_tier(code).cte("held_tier")
    statement = (
        _row_upsert(session, member_id)
        .returning(MemberTier, select(held.c.code).exists().label("held"))
        .add_cte(held)
    )
    row, is_held = session.execute(statement, execution_options={"populate_existing": True}).one()
    session.info.setdefault(_ROWS, {})[member_id] = row
    return row if is_held else None


def _row_upsert(session: Session, member_id: str) -> Any:
    """The upsert that creates the member's tier row or locks it (its conflict branch)."""
    statement = dialect_insert(session)(MemberTier).values(
        member_id=member_id, ladder_version=0, updated_at=clock.now()
    )
    return statement.on_conflict_do_update(
        index_elements=["member_id"], set_={"member_id": statement.excluded.member_id}
    )


def _skip_locked(session: Session, query: Select[MemberTier]) -> Select[MemberTier]:
    query = query.execution_options(populate_existing=True)
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query  # SQLite: the unit of work's BEGIN IMMEDIATE serialises runners


def _implicit_base_holders(session: Session, code: str) -> int:
    """How many members hold ``code`` without a row saying so: it is the lowest tier, with
    threshold 0, and they have no computed or manual tier recorded."""
    lowest = _tiers(session)[0]
    if lowest.code != code or lowest.threshold != 0:
        return 0
    return int(
        session.scalar(
            select(func.count())
            .select_from(Member)
            .outerjoin(MemberTier, MemberTier.member_id == Member.id)
            .where(MemberTier.tier_code.is_(None), MemberTier.manual_code.is_(None))
        )
        or 0
    )


def _hold_tier(session: Session, code: str) -> bool:
    """Whether the tier exists, keeping it so until this transaction ends (a key-share lock
    that a concurrent delete waits for; SQLite serialises writers instead)."""
    query = select(Tier.code).where(Tier.code == code)
    if session.get_bind().dialect.name == "postgresql":
        query = _held_tier(code)
    return session.scalar(query) is not None


def _held_tier(code: Any) -> Select[Any]:
    # FOR KEY SHARE (read and key_share: key_share alone is FOR NO KEY UPDATE, which made
    # every member's move into the tier wait for the one before to commit).
    return select(Tier.code).where(Tier.code == code).with_for_update(read=True, key_share=True)


def _lock_policy(session: Session) -> TierSettings:
    return settings_row(session, TierSettings, lock=True)


def _bump(settings: TierSettings, now: dt.datetime, actor: str) -> None:
    settings.ladder_version = (settings.ladder_version or 1) + 1
    settings.updated_at = now
    settings.updated_by = actor


def _check_rank_free(session: Session, rank: int, code: str) -> None:
    holder = session.scalar(select(Tier.code).where(Tier.rank == rank, Tier.code != code))
    if holder is not None:
        raise TierRankTakenError(rank, holder)


def _check_price_free(session: Session, price_id: str | None, code: str) -> None:
    if price_id is None:
        return
    holder = session.scalar(
        select(Tier.code).where(Tier.stripe_price_id == price_id, Tier.code != code)
    )
    if holder is not None:
        raise TierPriceTakenError(price_id, holder)


def _check_ladder(session: Session, *, with_tier: Tier) -> None:
    """Check the ladder as it would be with ``with_tier`` added or changed, before anything
    is flushed (the database's CHECKs would otherwise answer first, less helpfully)."""
    with session.no_autoflush:
        others = [_rung(t) for t in _tiers(session) if t.code != with_tier.code]
    problem = rules.ladder_problem([*others, _rung(with_tier)])
    if problem is not None:
        raise TierLadderOrderError(problem)


def _multiplier(value: Decimal | str | int) -> Decimal:
    try:
        multiplier = Decimal(str(value))
    except ArithmeticError:
        multiplier = Decimal("NaN")
    if not multiplier.is_finite() or not Decimal(1) <= multiplier < Decimal(100):
        raise InvalidFieldError(
            "points_multiplier", "The points multiplier is a decimal from 1 to below 100."
        )
    return multiplier.quantize(Decimal("0.0001"))


def _tier_snapshot(tier: Tier) -> dict[str, Any]:
    return {field: getattr(tier, field) for field in TIER_FIELDS}


def _assignment_snapshot(row: MemberTier, now: dt.datetime) -> dict[str, Any] | None:
    if not _manual_active(row, now):
        return None
    return {
        "tier": row.manual_code,
        "since": row.manual_since,
        "until": row.manual_until,
        "reason": row.manual_reason,
    }


def _view(session: Session, member_id: str) -> MemberTierView:
    tiers = _tiers(session)
    by_code = {tier.code: tier for tier in tiers}
    ladder_ = [_rung(t) for t in tiers]
    settings = get_policy(session)
    now = clock.now()
    row = session.get(MemberTier, member_id, populate_existing=True)
    tier: Tier | None
    source: str | None
    if row is not None and _manual_active(row, now):
        tier = by_code.get(row.manual_code or "")
        source, since, until, reason = (
            "manual",
            row.manual_since,
            row.manual_until,
            row.manual_reason,
        )
    elif (
        row is not None
        and _paid_active(row, now)
        and rules.is_higher(rules.rung(ladder_, row.paid_code), _computed(row, ladder_))
    ):
        tier = by_code.get(row.paid_code or "")
        source, since, until, reason = "paid", row.paid_since, row.paid_until, None
    else:
        computed = _computed(row, ladder_)
        tier = by_code.get(computed.code) if computed else None
        source = "computed" if tier else None
        since = row.since if row is not None and row.tier_code else None
        until = row.review_at if row is not None and row.tier_code else None
        reason = None
    value = _value_now(session, member_id, settings, now)
    held = rules.rung(ladder_, tier.code) if tier else None
    progress = (
        rules.progress(
            ladder_, held, value, metric=settings.metric, window=settings.window, now=now
        )
        if ladder_
        else None
    )
    return MemberTierView(
        member_id=member_id,
        tier=tier,
        source=source,
        since=since,
        until=until,
        reason=reason,
        metric=settings.metric,
        window=settings.window,
        value=value,
        progress=progress,
    )
