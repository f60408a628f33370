"""Perks and the rewards catalogue; claims issue coupon codes.

Points move only through the ledger's helpers (`lock_member`, `spend_points`,
`return_redemption`, `credit_bonus`), inside this module's units of work. Locks are taken in
one order: the member's wallet, then the claim, then the reward.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, extract, func, or_, select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.audit import service as audit
from loyalty.bus import publish
from loyalty.db import (
    Page,
    dialect_insert,
    keyset_page,
    locked_row,
    new_id,
    retry_when_gone,
    retrying,
    unit_of_work,
)
from loyalty.errors import InvalidFieldError, MemberNotActiveError, UnknownRewardError
from loyalty.ledger import service as ledger
from loyalty.members import service as members_service
from loyalty.members.models import Member
from loyalty.ports import Ports
from loyalty.rewards import rules
from loyalty.rewards.errors import (
    ClaimLimitReachedError,
    ClaimNotFoundError,
    ClaimNotIssuedError,
    PerkInUseError,
    PerkNotFoundError,
    RewardInUseError,
    RewardNotClaimableError,
    RewardNotFoundError,
    RewardOutOfStockError,
    UnknownTierCodeError,
)
from loyalty.rewards.events import ClaimChanged
from loyalty.rewards.models import Claim, Perk, PerkGrant, Reward
from loyalty.tiers import service as tiers_service

REWARD_FIELDS = (
    "kind",
    "name",
    "description",
    "points_cost",
    "amount",
    "currency",
    "percent",
    "sku",
    "tier_codes",
    "stock",
    "per_member_limit",
    "available_from",
    "available_until",
    "coupon_valid_days",
    "active",
)
PERK_FIELDS = (
    "kind",
    "name",
    "description",
    "tier_codes",
    "percent",
    "bonus_points",
    "reward_id",
    "active",
)
REFUSAL_DETAILS = {
    "inactive": "Reward {id!r} is not active.",
    "not_yet_available": "Reward {id!r} cannot be claimed yet.",
    "no_longer_available": "Reward {id!r} can no longer be claimed.",
    "tier": "Reward {id!r} is not available to the member's tier.",
}
# Attempts at a coupon code that no claim has yet (a clash is about 1 in 10^23).
COUPON_ATTEMPTS = 5

# The areas above that give a reward by id (referrals' rewards) each answer whether they do; a
# reward something gives cannot be deleted.
reward_references: Ports[[Session, str], bool] = Ports("rewards.reward_references")


@dataclass(frozen=True)
class RewardOffer:
    """A reward as one member sees it: claimable or not, and why not."""

    reward: Reward
    eligible: bool
    reason: str | None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.reward, name)


@dataclass(frozen=True)
class BirthdayStatus:
    year: int
    granted_at: dt.datetime | None
    next_due_month: str | None


@dataclass(frozen=True)
class MemberPerk:
    """A perk of the member's tier; for a birthday gift, this year's status."""

    perk: Perk
    birthday: BirthdayStatus | None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.perk, name)


@dataclass(frozen=True)
class ClaimResult:
    """A claim after a change, with the member's balance (and the points a cancellation
    gave back)."""

    claim: Claim
    balance: ledger.Balance
    points_returned: int | None = None
    created: bool = True  # False: the claim already made with this reference

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.claim, name)


# --- rewards catalogue ----------------------------------------------------------------------


def tier_references(session: Session, code: str) -> tuple[str, int]:
    """How many rewards and perks name the tier ``code`` (a tier referred to cannot be deleted)."""
    rows = [*session.scalars(select(Reward.tier_codes)), *session.scalars(select(Perk.tier_codes))]
    return "rewards or perks", sum(1 for codes in rows if code in (codes or []))


def get_reward(session: Session, reward_id: str) -> Reward:
    """The reward with this id. Raises `RewardNotFoundError`."""
    reward = session.get(Reward, reward_id)
    if reward is None:
        raise RewardNotFoundError(reward_id)
    return reward


def list_rewards(
    session: Session,
    *,
    active: bool | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Reward]:
    """Rewards in creation order, a page at a time."""
    query = select(Reward).order_by(Reward.id)
    if active is not None:
        query = query.where(Reward.active.is_(active))
    return keyset_page(session, query, Reward.id, limit, cursor)


@retrying
def create_reward(session: Session, *, actor: str, **values: Any) -> Reward:
    """Add a reward to the catalogue (audited). Raises `InvalidFieldError` (values that do
    not fit the kind, a window that ends before it starts) and `UnknownTierCodeError`."""
    with unit_of_work(session):
        values = {"tier_codes": [], "coupon_valid_days": 30, "active": True, **values}
        _check_reward(session, values)
        now = clock.now()
        reward = Reward(id=new_id("rwd"), created_at=now, updated_at=now, **values)
        session.add(reward)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="created",
            entity_type="reward",
            entity_id=reward.id,
            after=audit.snapshot_of(reward, REWARD_FIELDS),
        )
        return reward


@retrying
def update_reward(
    session: Session, *, reward_id: str, changes: dict[str, Any], actor: str
) -> Reward:
    """Change a reward (audited); fields absent from ``changes`` stay as they are. Claims
    already issued keep their terms. Locks the reward row. Raises `RewardNotFoundError`,
    `InvalidFieldError`, `UnknownTierCodeError`."""
    with unit_of_work(session):
        reward = _lock_reward(session, reward_id)
        with audit.recorded_update(
            session, reward, REWARD_FIELDS, actor=actor, entity_type="reward", entity_id=reward.id
        ) as before:
            _check_reward(session, {**before, **changes}, changed=changes)
            for field, value in changes.items():
                setattr(reward, field, value)
        return reward


@retrying
def delete_reward(session: Session, *, reward_id: str, actor: str) -> None:
    """Delete a reward nobody has claimed and no perk or referral reward gives (audited);
    otherwise raise `RewardInUseError` (deactivate it instead). Raises
    `RewardNotFoundError`."""
    with unit_of_work(session):
        reward = _lock_reward(session, reward_id)
        claimed = session.scalar(select(exists().where(Claim.reward_id == reward_id)))
        given = session.scalar(select(exists().where(Perk.reward_id == reward_id)))
        named = any(reward_references(session, reward_id))
        if claimed or given or named:
            raise RewardInUseError(reward_id)
        before = audit.snapshot_of(reward, REWARD_FIELDS)
        session.delete(reward)
        audit.record(
            session,
            actor=actor,
            action="deleted",
            entity_type="reward",
            entity_id=reward_id,
            before=before,
        )


def member_rewards(
    session: Session, member_id: str, *, limit: int = 50, cursor: str | None = None
) -> Page[RewardOffer]:
    """The active rewards, a page at a time, each with whether this member can claim it now
    and, when not, the reason (see `rules.REFUSAL_REASONS`). Raises `MemberNotFoundError`."""
    # The balance as of now (due activations and expiries settled), as GET balance shows it;
    # first, since settling may begin a write transaction. Raises `MemberNotFoundError`.
    points = ledger.get_balance(session, member_id).available
    member = members_service.get_member(session, member_id)
    query = select(Reward).where(Reward.active.is_(True)).order_by(Reward.id)
    page = keyset_page(session, query, Reward.id, limit, cursor)
    ids = [reward.id for reward in page.items]
    counts = dict(
        session.execute(
            select(Claim.reward_id, func.count())
            .where(
                Claim.member_id == member_id,
                Claim.reward_id.in_(ids),
                Claim.source == "purchase",
                Claim.status != "cancelled",
            )
            .group_by(Claim.reward_id)
        ).all()
    )
    tier = tiers_service.current_tiers(session, [member_id]).get(member_id)
    now = clock.now()
    offers = []
    for reward in page.items:
        standing = rules.MemberStanding(
            active=member.status == "active",
            tier_code=tier.code if tier else None,
            claims=counts.get(reward.id, 0),
            available=points,
        )
        reason = rules.claim_refusal(reward.terms(), standing, now)
        offers.append(RewardOffer(reward, reason is None, reason))
    return Page(items=offers, next_cursor=page.next_cursor)


# --- perks ----------------------------------------------------------------------------------

# A perk never granted may be deleted while the birthday job grants it: the grant's key check
# then fails once the deletion commits, and the job's batch is run again, without the perk.
retry_when_gone("fk_perk_grants_perk_id_perks")


def get_perk(session: Session, perk_id: str) -> Perk:
    """The perk with this id. Raises `PerkNotFoundError`."""
    perk = session.get(Perk, perk_id)
    if perk is None:
        raise PerkNotFoundError(perk_id)
    return perk


def list_perks(
    session: Session, *, kind: str | None = None, limit: int = 50, cursor: str | None = None
) -> Page[Perk]:
    """Perks in creation order, a page at a time."""
    query = select(Perk).order_by(Perk.id)
    if kind is not None:
        query = query.where(Perk.kind == kind)
    return keyset_page(session, query, Perk.id, limit, cursor)


@retrying
def create_perk(session: Session, *, actor: str, **values: Any) -> Perk:
    """Attach a new perk to tiers (audited). Raises `InvalidFieldError` (values that do not
    fit the kind), `UnknownTierCodeError`, `UnknownRewardError`."""
    with unit_of_work(session):
        values = {"tier_codes": [], "active": True, **values}
        _check_perk(session, values)
        now = clock.now()
        perk = Perk(id=new_id("prk"), created_at=now, updated_at=now, **values)
        session.add(perk)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="created",
            entity_type="perk",
            entity_id=perk.id,
            after=audit.snapshot_of(perk, PERK_FIELDS),
        )
        return perk


@retrying
def update_perk(session: Session, *, perk_id: str, changes: dict[str, Any], actor: str) -> Perk:
    """Change a perk (audited); fields absent from ``changes`` stay as they are. Gifts
    already granted stay granted. Raises `PerkNotFoundError`, `InvalidFieldError`,
    `UnknownTierCodeError`, `UnknownRewardError`."""
    with unit_of_work(session):
        perk = locked_row(session, Perk, perk_id, PerkNotFoundError(perk_id))
        with audit.recorded_update(
            session, perk, PERK_FIELDS, actor=actor, entity_type="perk", entity_id=perk.id
        ) as before:
            _check_perk(session, {**before, **changes}, changed=changes)
            for field, value in changes.items():
                setattr(perk, field, value)
        return perk


@retrying
def delete_perk(session: Session, *, perk_id: str, actor: str) -> None:
    """Delete a perk that was never granted (audited); otherwise raise `PerkInUseError`
    (deactivate it instead). Raises `PerkNotFoundError`."""
    with unit_of_work(session):
        perk = locked_row(session, Perk, perk_id, PerkNotFoundError(perk_id))
        if session.scalar(select(exists().where(PerkGrant.perk_id == perk_id))):
            raise PerkInUseError(perk_id)
        before = audit.snapshot_of(perk, PERK_FIELDS)
        session.delete(perk)
        audit.record(
            session,
            actor=actor,
            action="deleted",
            entity_type="perk",
            entity_id=perk_id,
            before=before,
        )


def member_perks(session: Session, member_id: str) -> list[MemberPerk]:
    """The active perks of the member's current tier (none without a tier); a birthday gift
    comes with this year's status: when it was granted, or the month it is next due.
    Raises `MemberNotFoundError`."""
    member = members_service.get_member(session, member_id)
    tier = tiers_service.current_tiers(session, [member_id]).get(member_id)
    if tier is None:
        return []
    perks = [
        perk
        for perk in session.scalars(select(Perk).where(Perk.active.is_(True)).order_by(Perk.id))
        if tier.code in (perk.tier_codes or [])
    ]
    now = clock.now()
    year = rules.local_now(now, member.timezone).year
    grants = {
        grant.perk_id: grant
        for grant in session.scalars(
            select(PerkGrant).where(PerkGrant.member_id == member_id, PerkGrant.year == year)
        )
    }
    result = []
    for perk in perks:
        status = None
        if perk.kind == "birthday_gift":
            grant = grants.get(perk.id)
            status = BirthdayStatus(
                year=year,
                granted_at=grant.granted_at if grant else None,
                next_due_month=rules.next_due_month(
                    member.birthday, member.timezone, now, granted_this_year=grant is not None
                ),
            )
        result.append(MemberPerk(perk, status))
    return result


# --- claims ---------------------------------------------------------------------------------


@retrying
def claim_reward(
    session: Session,
    *,
    member_id: str,
    reward_id: str,
    reference: str | None = None,
    client_id: str | None = None,
    actor: str | None = None,
) -> ClaimResult:
    """Claim a reward for points: spend its cost and issue a claim with a unique coupon code.

    Locks the member's wallet first, then the reward row (to take one from its stock).
    Raises `MemberNotFoundError`, `RewardNotFoundError`, `MemberNotActiveError`,
    `RewardNotClaimableError` (inactive, outside its window, not for the member's tier),
    `ClaimLimitReachedError`, `RewardOutOfStockError`, `InsufficientPointsError`.

    Idempotent on ``reference``: a claim of the same reward by the same member with the same
    reference returns the first claim (``created`` False) and spends nothing.
    """
    with unit_of_work(session):
        member = ledger.lock_member(session, member_id)
        if reference is not None:
            # Under the wallet lock, so two retries of one claim cannot both pass.
            earlier = session.scalar(
                select(Claim).where(
                    Claim.member_id == member_id,
                    Claim.reward_id == reward_id,
                    Claim.reference == reference,
                    Claim.source == "purchase",
                )
            )
            if earlier is not None:
                balance = ledger.Balance.of(
                    ledger.points_summaries(session, [member_id]).get(member_id)
                )
                return ClaimResult(earlier, balance, created=False)
        if member.status != "active":
            raise MemberNotActiveError(member.id, member.status)
        reward = _lock_reward(session, reward_id)
        tier = tiers_service.current_tiers(session, [member_id]).get(member_id)
        # Counted under the wallet lock, so claims of one member cannot pass the limit together.
        claims = _claims_count(session, member_id, reward_id)
        now = clock.now()
        standing = rules.MemberStanding(
            active=True, tier_code=tier.code if tier else None, claims=claims
        )
        reason = rules.claim_refusal(reward.terms(), standing, now)
        if reason == "out_of_stock":
            raise RewardOutOfStockError(reward_id)
        if reason == "limit_reached":
            assert reward.per_member_limit is not None
            raise ClaimLimitReachedError(reward_id, reward.per_member_limit)
        if reason is not None:
            raise RewardNotClaimableError(
                reward_id, reason, REFUSAL_DETAILS[reason].format(id=reward_id)
            )
        move = ledger.spend_points(
            session,
            member_id=member_id,
            points=reward.points_cost,
            reference=reference,
            reason=f"Reward: {reward.name}"[:500],
            client_id=client_id,
            actor=actor,
        )
        if reward.stock is not None:
            reward.stock -= 1
        claim = _issue(
            session,
            reward,
            member_id,
            now,
            source="purchase",
            points=reward.points_cost,
            redemption_id=move.id,
            reference=reference,
            client_id=client_id,
        )
        return ClaimResult(claim, move.balance)


def get_claim(session: Session, claim_id: str) -> Claim:
    """The claim with this id. Raises `ClaimNotFoundError`."""
    claim = session.get(Claim, claim_id)
    if claim is None:
        raise ClaimNotFoundError(claim_id)
    return claim


def find_claims(session: Session, *, coupon_code: str) -> Page[Claim]:
    """The claim with this coupon code (codes match regardless of case, spaces and dashes),
    as a page of zero or one claim."""
    code = rules.normalise_coupon_code(coupon_code)
    claim = session.scalar(select(Claim).where(Claim.coupon_code == code))
    return Page(items=[claim] if claim else [], next_cursor=None)


def list_member_claims(
    session: Session,
    member_id: str,
    *,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Claim]:
    """The member's claims, newest first, a page at a time; ``status`` filters on the status
    as of now (an issued claim past its expiry is expired). Raises `MemberNotFoundError`."""
    members_service.get_member(session, member_id)
    query = select(Claim).where(Claim.member_id == member_id).order_by(Claim.id.desc())
    if status is not None:
        now = clock.now()
        if status == "expired":
            query = query.where(
                or_(
                    Claim.status == "expired",
                    and_(Claim.status == "issued", Claim.expires_at <= now),
                )
            )
        elif status == "issued":
            query = query.where(Claim.status == "issued", Claim.expires_at > now)
        else:
            query = query.where(Claim.status == status)
    return keyset_page(session, query, Claim.id, limit, cursor, newest_first=True)


@retrying
def use_claim(session: Session, *, claim_id: str, actor: str | None = None) -> Claim:
    """Mark an issued claim used (the storefront applied its coupon). Locks the claim.
    Raises `ClaimNotFoundError`, `ClaimNotIssuedError` (used, cancelled or expired)."""
    with unit_of_work(session):
        claim = _lock_claim(session, claim_id)
        if claim.state != "issued":
            raise ClaimNotIssuedError(claim_id, claim.state)
        claim.status = "used"
        claim.used_at = clock.now()
        _claim_changed(session, claim, claim.used_at)
        return claim


@retrying
def cancel_claim(session: Session, *, claim_id: str, actor: str | None = None) -> ClaimResult:
    """Cancel an unused claim: its points go back to the lots they came from (points whose
    lot expired meanwhile are not returned) and its unit back to the reward's stock.

    Locks the member's wallet, then the claim, then the reward. Raises `ClaimNotFoundError`,
    `ClaimNotIssuedError` (used, cancelled or expired).
    """
    with unit_of_work(session):
        member_id = get_claim(session, claim_id).member_id
        ledger.lock_member(session, member_id)
        claim = _lock_claim(session, claim_id)
        if claim.state != "issued":
            raise ClaimNotIssuedError(claim_id, claim.state)
        returned = 0
        balance = ledger.Balance.of(ledger.points_summaries(session, [member_id]).get(member_id))
        if claim.redemption_id is not None:
            move = ledger.return_redemption(
                session,
                redemption_id=claim.redemption_id,
                reason="Reward claim cancelled",
                actor=actor,
            )
            returned, balance = move.points, move.balance
        if claim.source == "purchase":
            reward = _lock_reward(session, claim.reward_id)
            if reward.stock is not None:
                reward.stock += 1
        claim.status = "cancelled"
        claim.cancelled_at = clock.now()
        claim.points_returned = returned
        _claim_changed(session, claim, claim.cancelled_at)
        return ClaimResult(claim, balance, returned)


def grant_reward(
    session: Session, *, member_id: str, reward_id: str, reference: str | None, actor: str | None
) -> Claim:
    """Give the member a free claim of a catalogue reward (a referral reward, like the
    birthday gift's) inside the caller's unit of work: no points, no stock taken, no
    per-member limit. Raises `RewardNotFoundError`."""
    reward = get_reward(session, reward_id)
    now = clock.now()
    return _issue(session, reward, member_id, now, source="gift", points=0, reference=reference)


# --- due work -------------------------------------------------------------------------------


def run_due(session: Session, *, batch_size: int = 200) -> dict[str, int]:
    """Due rewards work for ``loyalty jobs run``: grant the birthday gifts due now and mark
    issued claims past their expiry as expired (their points are not returned). Batched
    short transactions that skip rows other runners hold (``SKIP LOCKED`` on PostgreSQL);
    a unique (perk, member, year) key makes each gift once. Returns labelled counts."""
    gifts = 0
    for perk_id in _birthday_perk_ids(session):
        after = ""
        while True:
            granted, after = _grant_birthday_batch(
                session, perk_id=perk_id, after=after, batch_size=batch_size
            )
            gifts += granted
            if not after:
                break
    expired = 0
    while True:
        count = _expire_claims_batch(session, batch_size=batch_size)
        expired += count
        if count < batch_size:
            break
    return {"birthday gifts": gifts, "claims expired": expired}


def _birthday_perk_ids(session: Session) -> list[str]:
    query = select(Perk.id).where(Perk.kind == "birthday_gift", Perk.active.is_(True))
    return list(session.scalars(query.order_by(Perk.id)))


@retrying
def _grant_birthday_batch(
    session: Session, *, perk_id: str, after: str, batch_size: int
) -> tuple[int, str]:
    """Grant one perk's birthday gift to up to ``batch_size`` members (by id after ``after``)
    whose birthday month it is; returns the gifts granted and the last member id looked at
    ("" when there are no more)."""
    with unit_of_work(session):
        perk = session.get(Perk, perk_id)
        if perk is None or not perk.active:
            return 0, ""
        now = clock.now()
        months = rules.candidate_months(now)
        not_granted = [
            and_(
                extract("month", Member.birthday) == month,
                ~exists().where(
                    PerkGrant.perk_id == perk_id,
                    PerkGrant.member_id == Member.id,
                    PerkGrant.year == year,
                ),
            )
            for year, month in months
        ]
        query = (
            select(Member)
            .where(
                Member.id > after,
                Member.status == "active",
                Member.birthday.is_not(None),
                or_(*not_granted),
            )
            .order_by(Member.id)
            .limit(batch_size)
        )
        if session.get_bind().dialect.name == "postgresql":
            # NO KEY UPDATE: shares the work between runners without blocking the ledger's
            # foreign-key checks on the member row.
            query = query.with_for_update(skip_locked=True, key_share=True)
        members = list(session.scalars(query))
        if not members:
            return 0, ""
        tiers = tiers_service.current_tiers(session, [m.id for m in members])
        granted = 0
        for member in members:
            tier = tiers.get(member.id)
            year = rules.birthday_due(member.birthday, member.timezone, now)
            if year is None or tier is None or tier.code not in (perk.tier_codes or []):
                continue
            if _grant(session, perk, member.id, year, now):
                granted += 1
        return granted, members[-1].id if len(members) == batch_size else ""


def _grant(session: Session, perk: Perk, member_id: str, year: int, now: dt.datetime) -> bool:
    """Give ``perk`` to the member for ``year`` unless it was given already (by this runner
    or another): the grant row is inserted first, and only the inserter gives the gift."""
    ledger.lock_member(session, member_id)
    grant_id = new_id("pgr")
    insert = dialect_insert(session)
    inserted = session.execute(
        insert(PerkGrant)
        .values(id=grant_id, perk_id=perk.id, member_id=member_id, year=year, granted_at=now)
        .on_conflict_do_nothing()
        .returning(PerkGrant.id)
    ).scalar()
    if inserted is None:
        return False
    grant = session.get(PerkGrant, grant_id)
    assert grant is not None
    if perk.bonus_points:
        ledger.credit_bonus(
            session,
            member_id=member_id,
            points=perk.bonus_points,
            reason=f"Birthday gift {year}: {perk.name}"[:500],
            reference=("perk", perk.id),
            actor="jobs",
        )
        grant.points = perk.bonus_points
    if perk.reward_id is not None:
        reward = get_reward(session, perk.reward_id)
        claim = _issue(session, reward, member_id, now, source="gift", points=0)
        grant.claim_id = claim.id
    return True


@retrying
def _expire_claims_batch(session: Session, *, batch_size: int) -> int:
    with unit_of_work(session):
        now = clock.now()
        query = (
            select(Claim)
            .where(Claim.status == "issued", Claim.expires_at <= now)
            .order_by(Claim.expires_at)
            .limit(batch_size)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        claims = list(session.scalars(query))
        for claim in claims:
            claim.status = "expired"
            claim.expired_at = now
        return len(claims)


# --- private helpers ------------------------------------------------------------------------


def _issue(
    session: Session,
    reward: Reward,
    member_id: str,
    now: dt.datetime,
    *,
    source: str,
    points: int,
    redemption_id: str | None = None,
    reference: str | None = None,
    client_id: str | None = None,
) -> Claim:
    """Add an issued claim with a coupon code that no claim has."""
    for _ in range(COUPON_ATTEMPTS):
        code = rules.new_coupon_code()
        if not session.scalar(select(exists().where(Claim.coupon_code == code))):
            break
    else:
        raise RuntimeError("could not generate a unique coupon code")
    claim = Claim(
        id=new_id("clm"),
        reward_id=reward.id,
        member_id=member_id,
        source=source,
        points=points,
        redemption_id=redemption_id,
        coupon_code=code,
        status="issued",
        reference=reference,
        client_id=client_id,
        expires_at=rules.coupon_expiry(now, reward.coupon_valid_days),
        created_at=now,
    )
    session.add(claim)
    session.flush()
    _claim_changed(session, claim, now)
    return claim


def _claim_changed(session: Session, claim: Claim, now: dt.datetime) -> None:
    publish(
        session,
        ClaimChanged(
            occurred_at=now,
            member_id=claim.member_id,
            claim_id=claim.id,
            reward_id=claim.reward_id,
            points=claim.points,
            code=claim.coupon_code,
            status=claim.status,
            source=claim.source,
        ),
    )


def _claims_count(session: Session, member_id: str, reward_id: str) -> int:
    """Claims bought (not gifts) and not cancelled: what counts against a per-member limit."""
    count = session.scalar(
        select(func.count())
        .select_from(Claim)
        .where(
            Claim.member_id == member_id,
            Claim.reward_id == reward_id,
            Claim.source == "purchase",
            Claim.status != "cancelled",
        )
    )
    return int(count or 0)


def _lock_reward(session: Session, reward_id: str) -> Reward:
    return locked_row(session, Reward, reward_id, RewardNotFoundError(reward_id))


def _lock_claim(session: Session, claim_id: str) -> Claim:
    return locked_row(session, Claim, claim_id, ClaimNotFoundError(claim_id))


def _check_tiers(session: Session, codes: list[str]) -> None:
    unknown = sorted(set(codes) - set(tiers_service.ladder(session)))
    if unknown:
        raise UnknownTierCodeError(unknown)


def _check_reward(
    session: Session, values: dict[str, Any], changed: dict[str, Any] | None = None
) -> None:
    problems = rules.reward_value_problems(values["kind"], values)
    if problems:
        raise InvalidFieldError(*problems[0])
    start, end = values.get("available_from"), values.get("available_until")
    if start is not None and end is not None and end <= start:
        raise InvalidFieldError("available_until", "Must be after available_from.")
    if changed is None or "tier_codes" in changed:
        _check_tiers(session, values["tier_codes"])


def _check_perk(
    session: Session, values: dict[str, Any], changed: dict[str, Any] | None = None
) -> None:
    problems = rules.perk_value_problems(values["kind"], values)
    if problems:
        raise InvalidFieldError(*problems[0])
    if changed is None or "tier_codes" in changed:
        _check_tiers(session, values["tier_codes"])
    reward_id = values.get("reward_id")
    if reward_id is not None and session.get(Reward, reward_id) is None:
        raise UnknownRewardError(reward_id)
