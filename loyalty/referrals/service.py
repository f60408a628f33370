"""Referrals: codes, attribution, qualification, rewards, abuse limits and clawback.

A member's referrer is set at enrolment; `on_enrolled` attributes the referral there (final:
one row per referee; it subscribes to `MemberEnrolled`) and runs the abuse checks. A referral
qualifies on the referee's first order at or above the minimum once that order's return
window is over (`qualify_referral`, run after an `OrderActivated` commits, and by the job for
orders that never gave one), and is clawed back when a refund takes the order below the
minimum (`on_order_refunded`, subscribed to `OrderRefunded`, inside the refund's unit of work).
Qualification and clawback publish `ReferralQualified` and `ReferralClawedBack`.

Points move only through the ledger's helpers (`lock_members`, `credit_bonus`,
`reverse_bonus`), inside the caller's unit of work. Both members' wallets are locked first,
in member-id order (the one order of every multi-wallet operation), then the referral row,
so qualifications, clawbacks and the job never wait on each other in a circle.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.audit import service as audit
from loyalty.bus import publish
from loyalty.db import Page, after_commit, keyset_page, new_id, retrying, settings_row, unit_of_work
from loyalty.errors import InvalidFieldError, UnknownRewardError
from loyalty.ledger import ports as ledger_ports
from loyalty.ledger import service as ledger
from loyalty.ledger.events import OrderActivated, OrderRefunded
from loyalty.members import service as members_service
from loyalty.members.events import MemberEnrolled
from loyalty.members.models import Member
from loyalty.referrals import rules
from loyalty.referrals.errors import ReferralNotFoundError, ReferralNotReviewableError
from loyalty.referrals.events import ReferralClawedBack, ReferralQualified
from loyalty.referrals.models import Referral, ReferralSettings
from loyalty.rewards import service as rewards_service
from loyalty.rewards.errors import RewardNotFoundError
from loyalty.tiers import service as tiers_service

SETTINGS_FIELDS = (
    "enabled",
    "min_order_total",
    "min_order_currency",
    "referrer_points",
    "referrer_reward_id",
    "referee_points",
    "referee_reward_id",
    "monthly_cap",
    "total_cap",
    "shared_tier_days",
    "velocity_limit",
    "link_template",
)
# How far up a chain of referrers the loop check looks (chains are short in practice).
MAX_CHAIN = 100
COUNTED_STATUSES = ("pending", "qualified", "held", "rejected", "clawed_back")


@dataclass(frozen=True)
class Referee:
    """A referee as the referrer sees them: a first name or a masked email, never more."""

    referral_id: str
    name: str
    status: str
    enrolled_at: dt.datetime
    qualified_at: dt.datetime | None


@dataclass(frozen=True)
class MemberReferrals:
    """A member's code, link, counts, rewards earned and a page of their referees."""

    member_id: str
    referral_code: str
    link: str | None
    counts: dict[str, int]
    points_earned: int
    items: list[Referee] = field(default_factory=list)
    next_cursor: str | None = None


# --- programme terms ------------------------------------------------------------------------


def get_settings(session: Session) -> ReferralSettings:
    """The referral programme's terms (the migration's defaults until a manager changes
    them)."""
    return settings_row(session, ReferralSettings)


@retrying
def update_settings(session: Session, *, changes: dict[str, Any], actor: str) -> ReferralSettings:
    """Change the programme's terms (audited); fields absent from ``changes`` stay as they
    are. Referrals already qualified keep their rewards. Locks the settings row. Raises
    `UnknownRewardError` and `InvalidFieldError`."""
    with unit_of_work(session):
        settings = settings_row(session, ReferralSettings, lock=True)
        for name in ("referrer_reward_id", "referee_reward_id"):
            reward_id = changes.get(name)
            if reward_id is not None:
                try:
                    rewards_service.get_reward(session, reward_id)
                except RewardNotFoundError:
                    error = UnknownRewardError(reward_id)
                    error.field = name
                    raise error from None
        template = changes.get("link_template")
        if template is not None:
            problem = rules.link_template_problem(template)
            if problem:
                raise InvalidFieldError("link_template", problem)
        with audit.recorded_update(
            session,
            settings,
            SETTINGS_FIELDS,
            actor=actor,
            entity_type="referral_settings",
            entity_id="referrals",
        ):
            audit.apply_changes(settings, changes, SETTINGS_FIELDS)
        return settings


# --- reads ----------------------------------------------------------------------------------


def get_referral(session: Session, referral_id: str) -> Referral:
    """The referral with this id. Raises `ReferralNotFoundError`."""
    referral = session.get(Referral, referral_id)
    if referral is None:
        raise ReferralNotFoundError(referral_id)
    return referral


def names_reward(session: Session, reward_id: str) -> bool:
    """Whether the referral terms give this catalogue reward (to either side)."""
    settings = get_settings(session)
    return reward_id in (settings.referrer_reward_id, settings.referee_reward_id)


def qualified_referrals(session: Session, member_id: str) -> int:
    """How many of the member's referrals have qualified and not been clawed back (for the
    community area's referral badges)."""
    count = session.scalar(
        select(func.count())
        .select_from(Referral)
        .where(Referral.referrer_id == member_id, Referral.status == "qualified")
    )
    return int(count or 0)


def member_referrals(
    session: Session, member_id: str, *, limit: int = 50, cursor: str | None = None
) -> MemberReferrals:
    """The member's referral code and shareable link, their referrals counted by status,
    the points earned by referring (net of clawbacks), and a page of referees, newest
    first. Raises `MemberNotFoundError`."""
    member = members_service.get_member(session, member_id)
    settings = get_settings(session)
    by_status = dict(
        session.execute(
            select(Referral.status, func.count())
            .where(Referral.referrer_id == member_id)
            .group_by(Referral.status)
        ).all()
    )
    counts = {status: int(by_status.get(status, 0)) for status in COUNTED_STATUSES}
    counts = {"invited": sum(counts.values()), **counts}
    earned = session.scalar(
        select(
            func.coalesce(
                func.sum(Referral.referrer_points - Referral.referrer_points_clawed_back), 0
            )
        ).where(Referral.referrer_id == member_id)
    )
    query = (
        select(Referral, Member)
        .join(Member, Member.id == Referral.referee_id)
        .where(Referral.referrer_id == member_id)
        .order_by(Referral.id.desc())
    )
    if cursor is not None:
        query = query.where(Referral.id < cursor)
    rows = [(row[0], row[1]) for row in session.execute(query.limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return MemberReferrals(
        member_id=member.id,
        referral_code=member.referral_code,
        link=rules.link(settings.link_template, member.referral_code),
        counts=counts,
        points_earned=int(earned or 0),
        items=[
            Referee(
                referral_id=referral.id,
                name=rules.display_name(referee.name, referee.email),
                status=referral.status,
                enrolled_at=referee.enrolled_at,
                qualified_at=referral.qualified_at,
            )
            for referral, referee in rows
        ],
        next_cursor=rows[-1][0].id if more else None,
    )


def list_reviews(session: Session, *, limit: int = 50, cursor: str | None = None) -> Page[Referral]:
    """Referrals held for a manager's review, oldest first, a page at a time."""
    query = select(Referral).where(Referral.status == "held").order_by(Referral.id)
    return keyset_page(session, query, Referral.id, limit, cursor)


# --- review ---------------------------------------------------------------------------------


@retrying
def approve_referral(session: Session, *, referral_id: str, reason: str, actor: str) -> Referral:
    """Approve a held (or rejected) referral: it becomes pending, and qualifies at once when
    the referee's qualifying order has already activated. Audited with the reason. Locks
    both members' wallets (in member-id order), then the referral.
    Raises `ReferralNotFoundError`, `ReferralNotReviewableError`."""
    with unit_of_work(session):
        found = get_referral(session, referral_id)
        ledger.lock_members(session, [found.referee_id, found.referrer_id])
        referral = _lock(session, Referral.id == referral_id)
        assert referral is not None
        if referral.status not in ("held", "rejected"):
            raise ReferralNotReviewableError(referral_id, referral.status, "approved")
        now = clock.now()
        before = _review_snapshot(referral)
        referral.status = "pending"
        referral.reviewed_at, referral.reviewed_by, referral.note = now, actor, reason
        audit.record(
            session,
            actor=actor,
            action="approved",
            entity_type="referral",
            entity_id=referral.id,
            before=before,
            after=_review_snapshot(referral),
            reason=reason,
        )
        _qualify_if_due(session, referral, get_settings(session), now, actor)
        return referral


@retrying
def reject_referral(session: Session, *, referral_id: str, reason: str, actor: str) -> Referral:
    """Reject a held or pending referral: it will never qualify. Audited with the reason.
    Locks the referral. Raises `ReferralNotFoundError`, `ReferralNotReviewableError`."""
    with unit_of_work(session):
        referral = _lock(session, Referral.id == referral_id)
        if referral is None:
            raise ReferralNotFoundError(referral_id)
        if referral.status not in ("held", "pending"):
            raise ReferralNotReviewableError(referral_id, referral.status, "rejected")
        before = _review_snapshot(referral)
        referral.status = "rejected"
        referral.reason = "manual"  # the abuse reason, if any, stays in the audit record
        referral.reviewed_at, referral.reviewed_by, referral.note = clock.now(), actor, reason
        audit.record(
            session,
            actor=actor,
            action="rejected",
            entity_type="referral",
            entity_id=referral.id,
            before=before,
            after=_review_snapshot(referral),
            reason=reason,
        )
        return referral


# --- hooks ----------------------------------------------------------------------------------


def on_member_enrolled(session: Session, event: MemberEnrolled) -> None:
    """Subscriber: attribute a member who joined with a referrer (see `on_enrolled`)."""
    if event.referrer_id is not None:
        member = members_service.get_member(session, event.member_id)
        on_enrolled(session, member=member, now=event.occurred_at, actor=event.actor)


def on_enrolled(
    session: Session, *, member: Member, now: dt.datetime, actor: str | None
) -> Referral | None:
    """Attribute a new member to their referrer, inside the enrolment's unit of work.

    Rejects a self-referral (same email, payment card hash or device id as the referrer) or
    a loop; holds the referral for review when the referrer already had ``velocity_limit``
    referrals in the last 24 hours. Locks the referrer's member row (no key update) so that
    concurrent enrolments count each other.
    """
    if member.referrer_id is None or member.referrer_id == member.id:
        return None
    referrer = session.scalar(
        select(Member)
        .where(Member.id == member.referrer_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    assert referrer is not None
    settings = get_settings(session)
    recent = session.scalar(
        select(func.count())
        .select_from(Referral)
        .where(
            Referral.referrer_id == referrer.id,
            Referral.created_at > now - rules.VELOCITY_WINDOW,
        )
    )
    decision = rules.attribution(
        _party(referrer),
        _party(member),
        loop=_is_ancestor(session, member.id, of=referrer),
        recent=int(recent or 0),
        velocity_limit=settings.velocity_limit,
    )
    referral = Referral(
        id=new_id("ref"),
        referrer_id=referrer.id,
        referee_id=member.id,
        status=decision.status,
        reason=decision.reason,
        created_at=now,
    )
    session.add(referral)
    session.flush()
    return referral


@retrying
def qualify_referral(session: Session, *, referee_id: str, actor: str | None = None) -> bool:
    """Qualify the member's pending referral when its qualifying order has activated, in a
    unit of work of its own. The ledger runs it after an activation commits; the job runs
    it for orders that never gave one. Locks both members' wallets in member-id order, then
    the referral. Returns whether it qualified. Idempotent."""
    referral = session.scalar(select(Referral).where(Referral.referee_id == referee_id))
    if referral is None or referral.status != "pending":
        return False
    with unit_of_work(session):
        ledger.lock_members(session, [referral.referee_id, referral.referrer_id])
        referral = _lock(session, Referral.id == referral.id)
        if referral is None or referral.status != "pending":
            return False
        return _qualify_if_due(session, referral, get_settings(session), clock.now(), actor)


def on_order_activated(session: Session, event: OrderActivated) -> None:
    """Subscriber: an order's points activated, which may qualify the member's referral.
    Qualifying rewards the referrer too, which takes the referrer's wallet: so it runs after
    this commits, in a unit of work that locks both wallets in member-id order
    (`qualify_referral`; the job catches up if it cannot)."""
    on_orders_activated(session, [event.member_id], event.actor)


def on_orders_activated(session: Session, member_ids: list[str], actor: str | None) -> None:
    """`on_order_activated` for members who each had an order activated (one event, or the
    members of a settlement the job wrote in one statement: `IN_BULK`)."""
    for member_id in member_ids:
        if members_service.get_member(session, member_id).referrer_id is not None:
            after_commit(session, partial(qualify_referral, referee_id=member_id, actor=actor))


IN_BULK = ledger_ports.InBulk(
    "referrals", subscriber=on_order_activated, activated=on_orders_activated
)


def on_order_refunded(session: Session, event: OrderRefunded) -> None:
    """Subscriber: a refund of the order was written inside its unit of work, the member's
    wallet (and the referrer's) locked. When the order qualified a referral and
    is now below the minimum (or wholly refunded), both sides' reward points are taken back
    under the programme's refund policy and the referral is clawed back. Coupons issued as
    rewards are not revoked."""
    referral = _lock(session, Referral.referee_id == event.member_id)
    if referral is None or referral.status != "qualified" or referral.order_pk != event.order_pk:
        return
    settings = get_settings(session)
    net = event.order_total - event.amount_refunded
    if rules.qualifies(net, event.currency, settings.min_order_total, settings.min_order_currency):
        return
    now, actor = event.occurred_at, event.actor
    reason = "Referral clawed back: the qualifying order was refunded"
    reference = ("referral", referral.id)
    if referral.referee_points:
        move = ledger.reverse_bonus(
            session,
            member_id=referral.referee_id,
            points=referral.referee_points,
            reason=reason,
            reference=reference,
            actor=actor,
        )
        referral.referee_points_clawed_back = -move.points
    if referral.referrer_points:
        move = ledger.reverse_bonus(
            session,
            member_id=referral.referrer_id,
            points=referral.referrer_points,
            reason=reason,
            reference=reference,
            actor=actor,
        )
        referral.referrer_points_clawed_back = -move.points
    referral.status = "clawed_back"
    referral.clawed_back_at = now
    session.flush()
    # The referrer's qualified-referral badges follow (the refund locked both wallets first,
    # in member-id order).
    publish(session, ReferralClawedBack(**_told(referral, now, actor)))


def run_due(session: Session, *, batch_size: int = 200) -> dict[str, int]:
    """Due referral work for ``loyalty jobs run``: qualify pending referrals whose
    qualifying order is past its return window but gave no activation (an order reported
    after its window, one that earned no points, or while the programme was off). One short
    unit of work per referral. Returns labelled counts."""
    qualified = 0
    after = ""
    while True:
        ids = _due_referral_ids(session, after=after, batch_size=batch_size)
        for referral_id, referee_id in ids:
            if _qualify_due(session, referral_id=referral_id, referee_id=referee_id):
                qualified += 1
        if len(ids) < batch_size:
            break
        after = ids[-1][0]
    return {"referrals qualified": qualified}


# --- private helpers ------------------------------------------------------------------------


def _due_referral_ids(session: Session, *, after: str, batch_size: int) -> list[tuple[str, str]]:
    settings = get_settings(session)
    if not settings.enabled:
        return []
    due_order = ledger.has_order_reaching(
        Referral.referee_id,
        min_total=settings.min_order_total,
        currency=settings.min_order_currency,
        by=clock.now(),
    )
    query = (
        select(Referral.id, Referral.referee_id)
        .where(Referral.status == "pending", Referral.id > after, due_order)
        .order_by(Referral.id)
        .limit(batch_size)
    )
    return [(str(a), str(b)) for a, b in session.execute(query).all()]


def _qualify_due(session: Session, *, referral_id: str, referee_id: str) -> bool:
    return qualify_referral(session, referee_id=referee_id, actor="jobs")


def _qualify_if_due(
    session: Session,
    referral: Referral,
    settings: ReferralSettings,
    now: dt.datetime,
    actor: str | None,
) -> bool:
    """Qualify the pending, locked ``referral`` when the referee's qualifying order has
    activated: the first order by placement whose amount after refunds reaches the minimum
    (an order refunded below it no longer counts, and the next one may). The referee's
    wallet must be locked. Returns whether it qualified."""
    if not settings.enabled or referral.status != "pending":
        return False
    order = _qualifying_order(session, referral.referee_id, settings)
    if order is None or order.activates_at > now:
        return False
    _qualify(session, referral, order, settings, now, actor)
    return True


def _qualifying_order(
    session: Session, member_id: str, settings: ReferralSettings
) -> ledger.OrderRef | None:
    return ledger.first_order_reaching(
        session,
        member_id,
        min_total=settings.min_order_total,
        currency=settings.min_order_currency,
    )


def _qualify(
    session: Session,
    referral: Referral,
    order: ledger.OrderRef,
    settings: ReferralSettings,
    now: dt.datetime,
    actor: str | None,
) -> None:
    """Mark the referral qualified on ``order`` and reward both sides: the referee always
    (when active), the referrer within the monthly and total caps. Then the shared tier and
    the community hook."""
    referral.status = "qualified"
    referral.order_pk = order.pk
    referral.qualified_at = now
    reference = ("referral", referral.id)
    referee = members_service.get_member(session, referral.referee_id)
    if referee.status == "active":
        if settings.referee_points:
            ledger.credit_bonus(
                session,
                member_id=referee.id,
                points=settings.referee_points,
                reason="Referral: welcome reward for your first order",
                reference=reference,
                actor=actor,
            )
            referral.referee_points = settings.referee_points
        if settings.referee_reward_id:
            claim = rewards_service.grant_reward(
                session,
                member_id=referee.id,
                reward_id=settings.referee_reward_id,
                reference=f"referral:{referral.id}",
                actor=actor,
            )
            referral.referee_claim_id = claim.id
    # The referrer's wallet is locked (the caller locked both in member-id order): caps are
    # counted under this lock, so qualifications of one referrer's referees count each other.
    referrer = ledger.lock_member(session, referral.referrer_id)
    outcome = "referrer_inactive"
    if referrer.status == "active":
        outcome = rules.referrer_outcome(
            monthly_cap=settings.monthly_cap,
            total_cap=settings.total_cap,
            rewarded_this_month=_rewarded(session, referrer.id, since=rules.month_start(now)),
            rewarded_total=_rewarded(session, referrer.id),
        )
    if outcome == "rewarded" and not (settings.referrer_points or settings.referrer_reward_id):
        outcome = "no_reward"
    if outcome == "rewarded":
        if settings.referrer_points:
            ledger.credit_bonus(
                session,
                member_id=referrer.id,
                points=settings.referrer_points,
                reason="Referral: a friend you invited made their first order",
                reference=reference,
                actor=actor,
            )
            referral.referrer_points = settings.referrer_points
        if settings.referrer_reward_id:
            claim = rewards_service.grant_reward(
                session,
                member_id=referrer.id,
                reward_id=settings.referrer_reward_id,
                reference=f"referral:{referral.id}",
                actor=actor,
            )
            referral.referrer_claim_id = claim.id
    referral.referrer_outcome = outcome
    session.flush()
    if settings.shared_tier_days and referee.status == "active":
        _share_tier(session, referral, settings.shared_tier_days, now, actor)
    publish(session, ReferralQualified(**_told(referral, now, actor)))


def _told(referral: Referral, now: dt.datetime, actor: str | None) -> dict[str, Any]:
    return {
        "occurred_at": now,
        "member_id": referral.referrer_id,
        "referral_id": referral.id,
        "referrer_id": referral.referrer_id,
        "referee_id": referral.referee_id,
        "actor": actor,
    }


def _share_tier(
    session: Session, referral: Referral, days: int, now: dt.datetime, actor: str | None
) -> None:
    """Give the referee the referrer's tier for ``days`` when it is above their own."""
    tiers = tiers_service.current_tiers(session, [referral.referrer_id, referral.referee_id])
    shared, own = tiers.get(referral.referrer_id), tiers.get(referral.referee_id)
    if shared is None or (own is not None and own.rank >= shared.rank):
        return
    tiers_service.assign_within(
        session,
        member_id=referral.referee_id,
        tier=shared.code,
        reason=f"Referral {referral.id}: the referrer's tier for {days} days",
        until=now + dt.timedelta(days=days),
        actor=actor or "referrals",
    )


def _rewarded(session: Session, referrer_id: str, since: dt.datetime | None = None) -> int:
    """Qualified referrals (not clawed back) for which the referrer was rewarded."""
    query = (
        select(func.count())
        .select_from(Referral)
        .where(
            Referral.referrer_id == referrer_id,
            Referral.status == "qualified",
            Referral.referrer_outcome == "rewarded",
        )
    )
    if since is not None:
        query = query.where(Referral.qualified_at >= since)
    return int(session.scalar(query) or 0)


def _lock(session: Session, condition: Any) -> Referral | None:
    return session.scalar(
        select(Referral)
        .where(condition)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def _party(member: Member) -> rules.Party:
    return rules.Party(member_id=member.id, email=member.email, metadata=member.metadata_ or {})


def _is_ancestor(session: Session, member_id: str, *, of: Member) -> bool:
    """Whether ``member_id`` referred ``of``, directly or through a chain of referrers."""
    current, seen = of.referrer_id, {of.id}
    for _ in range(MAX_CHAIN):
        if current == member_id:
            return True
        if current is None or current in seen:
            return False
        seen.add(current)
        current = session.scalar(select(Member.referrer_id).where(Member.id == current))
    return False


def _review_snapshot(referral: Referral) -> dict[str, Any]:
    return audit.snapshot_of(referral, ("status", "reason", "note"))
