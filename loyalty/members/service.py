"""Enrolment, profile updates and lookups of members."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loyalty.bus import publish
from loyalty.db import Page, constraint_name, keyset_page, locked_row, new_id, unit_of_work, utcnow
from loyalty.errors import InvalidFieldError, MemberClosedError
from loyalty.members import rules
from loyalty.members.errors import MemberNotFoundError
from loyalty.members.events import MemberEnrolled, MemberUpdated
from loyalty.members.models import Member, PointsSummary
from loyalty.ports import Port

# A clash of random referral codes is rare (see rules); this many tries make failure absurd.
REFERRAL_CODE_ATTEMPTS = 5

_PROFILE_FIELDS = ("email", "name", "birthday", "timezone", "marketing_consent")

# Members' reads show each member's balances and tier, which the ledger and the tiers (areas
# above this one) keep: ``points_summaries(session, member_ids, settle=...)`` gives wallets
# (available, pending, held, lifetime_earned) by member id, ``current_tiers(session,
# member_ids)`` tiers (code, name) by member id.
points_summaries: Port[..., dict[str, Any]] = Port("members.points_summaries")
current_tiers: Port[..., dict[str, Any]] = Port("members.current_tiers")


def enroll_member(
    session: Session,
    *,
    external_id: str,
    email: str | None = None,
    name: str | None = None,
    birthday: dt.date | None = None,
    timezone: str | None = None,
    referral_code: str | None = None,
    marketing_consent: bool = False,
    enrolled_at: dt.datetime | None = None,
    metadata: dict[str, Any] | None = None,
    actor: str | None = None,
) -> tuple[Member, bool]:
    """Enrol a member, or return the one already enrolled under ``external_id``.

    Returns ``(member, created)``. Idempotent on ``external_id``, also under concurrent calls:
    the loser of a race on the unique key gets the winner's member. ``referral_code`` is the
    code of the member who invited this one. Raises `InvalidFieldError` for an unknown code.
    """
    with unit_of_work(session):
        member, created = _enroll(
            session,
            external_id=external_id,
            email=email,
            name=name,
            birthday=birthday,
            timezone=timezone,
            referral_code=referral_code,
            marketing_consent=marketing_consent,
            enrolled_at=enrolled_at,
            metadata=metadata,
            actor=actor,
        )
    # An existing member's balances as of now (its due work done), as every read shows them.
    return _with_points(session, [member], settle=not created)[0], created


def _enroll(
    session: Session,
    *,
    external_id: str,
    email: str | None,
    name: str | None,
    birthday: dt.date | None,
    timezone: str | None,
    referral_code: str | None,
    marketing_consent: bool,
    enrolled_at: dt.datetime | None,
    metadata: dict[str, Any] | None,
    actor: str | None,
) -> tuple[Member, bool]:
    existing = _by_external_id(session, external_id)
    if existing is not None:
        return existing, False
    referrer_id = None
    if referral_code:
        referrer_id = _referrer_id(session, referral_code)
    for _attempt in range(REFERRAL_CODE_ATTEMPTS):
        member = Member(
            id=new_id("mem"),
            external_id=external_id,
            email=email.lower() if email else None,
            name=name,
            birthday=birthday,
            timezone=timezone or "UTC",
            marketing_consent=marketing_consent,
            status="active",
            referral_code=rules.new_referral_code(),
            referrer_id=referrer_id,
            metadata_=metadata or {},
            enrolled_at=enrolled_at or utcnow(),
            enrolled_by=actor,
        )
        try:
            with session.begin_nested():
                session.add(member)
        except IntegrityError as error:
            name_ = constraint_name(error)
            if name_ == "uq_members_external_id":
                winner = _by_external_id(session, external_id)
                assert winner is not None
                return winner, False
            if name_ != "uq_members_referral_code":
                raise
            continue
        publish(
            session,
            MemberEnrolled(
                occurred_at=utcnow(),
                member_id=member.id,
                external_id=member.external_id,
                status=member.status,
                referrer_id=referrer_id,
                enrolled_at=member.enrolled_at,
                actor=actor,
            ),
        )
        return member, True
    raise RuntimeError("could not generate a unique referral code")


def get_member(session: Session, member_id: str) -> Member:
    """The member with this id. Raises `MemberNotFoundError`."""
    member = session.get(Member, member_id)
    if member is None:
        raise MemberNotFoundError(member_id)
    return member


def get_member_with_points(session: Session, member_id: str) -> Member:
    """The member with this id and its balances. Raises `MemberNotFoundError`."""
    return _with_points(session, [get_member(session, member_id)], settle=True)[0]


def _with_points(session: Session, members: list[Member], *, settle: bool = False) -> list[Member]:
    """Attach each member's balances and tier, read from the ledger and the tiers in one
    query each. With ``settle`` (outside a unit of work), due points work is done first so
    the balances are those of now, as the balance call shows them."""
    ids = [m.id for m in members]
    wallets = points_summaries(session, ids, settle=settle)
    tiers = current_tiers(session, ids)
    for member in members:
        tier = tiers.get(member.id)
        member.attach_tier({"code": tier.code, "name": tier.name} if tier else None)
        wallet = wallets.get(member.id)
        if wallet is not None:
            member.attach_points(
                PointsSummary(
                    available=wallet.available,
                    pending=wallet.pending,
                    held=wallet.held,
                    lifetime_earned=wallet.lifetime_earned,
                )
            )
    return members


def update_member(session: Session, *, member_id: str, changes: dict[str, Any]) -> Member:
    """Change profile fields and status; fields absent from ``changes`` stay as they are.

    Locks the member row. A closed member cannot change (`MemberClosedError`); raises
    `MemberNotFoundError`.
    """
    with unit_of_work(session):
        member = locked_row(session, Member, member_id, MemberNotFoundError(member_id))
        if member.status == "closed":
            raise MemberClosedError(member_id)
        before = {field: getattr(member, field) for field in (*_PROFILE_FIELDS, "status")}
        before["metadata"] = member.metadata_
        for field in _PROFILE_FIELDS:
            if field in changes:
                value = changes[field]
                if field == "email" and value:
                    value = value.lower()
                if field == "timezone" and value is None:
                    value = "UTC"
                if field == "marketing_consent" and value is None:
                    value = False
                setattr(member, field, value)
        if "metadata" in changes:
            member.metadata_ = changes["metadata"] or {}
        if "status" in changes:
            member.status = changes["status"]
        after = {field: getattr(member, field) for field in (*_PROFILE_FIELDS, "status")}
        after["metadata"] = member.metadata_
        changed = tuple(field for field in before if before[field] != after[field])
        if changed:
            publish(
                session,
                MemberUpdated(
                    occurred_at=utcnow(),
                    member_id=member.id,
                    external_id=member.external_id,
                    status=member.status,
                    referrer_id=member.referrer_id,
                    enrolled_at=member.enrolled_at,
                    changed=changed,
                ),
            )
    return _with_points(session, [member], settle=True)[0]


def list_members(
    session: Session,
    *,
    external_id: str | None = None,
    email: str | None = None,
    status: str | None = None,
    referral_code: str | None = None,
    enrolled_after: dt.datetime | None = None,
    enrolled_before: dt.datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Member]:
    """Members matching every filter given, in enrolment-record order, a page at a time."""
    query: Select[Member] = select(Member).order_by(Member.id)
    if external_id is not None:
        query = query.where(Member.external_id == external_id)
    if email is not None:
        query = query.where(Member.email == email.strip().lower())
    if status is not None:
        query = query.where(Member.status == status)
    if referral_code is not None:
        query = query.where(Member.referral_code == rules.normalise_referral_code(referral_code))
    if enrolled_after is not None:
        query = query.where(Member.enrolled_at >= enrolled_after)
    if enrolled_before is not None:
        query = query.where(Member.enrolled_at < enrolled_before)
    page = keyset_page(session, query, Member.id, limit, cursor)
    return Page(_with_points(session, page.items, settle=True), page.next_cursor)


def _by_external_id(session: Session, external_id: str) -> Member | None:
    return session.scalar(select(Member).where(Member.external_id == external_id))


def _referrer_id(session: Session, code: str) -> str:
    normalised = rules.normalise_referral_code(code)
    referrer_id = None
    if rules.is_referral_code(normalised):
        referrer_id = session.scalar(select(Member.id).where(Member.referral_code == normalised))
    if referrer_id is None:
        raise InvalidFieldError("referral_code", "No member has this referral code.")
    return referrer_id


def active_members_born_on(
    session: Session,
    *,
    birthdays: list[dt.date],
    time_zones: list[str],
    after: str | None = None,
    limit: int = 50,
) -> list[Member]:
    """Active members born on one of ``birthdays`` whose time zone is one of ``time_zones``,
    in id order after the member ``after``, at most ``limit`` (birthday triggers; the index on
    birthday and time zone finds them)."""
    query = (
        select(Member)
        .where(
            Member.birthday.in_(birthdays),
            Member.timezone.in_(time_zones),
            Member.status == "active",
        )
        .order_by(Member.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Member.id > after)
    return list(session.scalars(query))
