"""Badges: a member's standing on each badge, the metric of a badge's rule (event counts and
property sums, streaks, spend and orders, qualified referrals), awarding the levels reached
(with their bonus points), storing progress for the leaderboards, and revoking levels no
longer reached.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, literal_column, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from loyalty import clock, configcache
from loyalty.bus import publish
from loyalty.community import rules
from loyalty.community.events import BadgeAwarded
from loyalty.community.models import Badge, BadgeAward, BadgeProgress, CommunityEvent, MemberStreak
from loyalty.community.service.configuration import get_settings
from loyalty.db import dialect_insert, new_id, retry_when_gone
from loyalty.ledger import service as ledger
from loyalty.members import service as members_service
from loyalty.members.models import Member
from loyalty.referrals import service as referrals_service

ORDER_RULES = ("spend", "orders")

# A badge never awarded may be deleted while an order or event counts towards it: the
# progress row's (or the award's) key check then fails once the deletion commits, and the
# operation is run again, without the badge.
retry_when_gone("fk_badge_progress_badge_id_badges", "fk_badge_awards_badge_id_badges")


@dataclass(frozen=True)
class BadgeStanding:
    """Where a member stands on one badge: the metric, the level reached, the next level."""

    badge: Badge
    progress: rules.Progress

    @property
    def badge_id(self) -> str:
        return self.badge.id

    @property
    def name(self) -> str:
        return self.badge.name

    @property
    def rule(self) -> str:
        return self.badge.rule

    @property
    def value(self) -> Decimal:
        return rules.plain(self.progress.value)

    @property
    def level(self) -> int:
        return self.progress.level

    @property
    def next_level(self) -> dict[str, Any] | None:
        nxt = self.progress.next_level
        if nxt is None:
            return None
        return {
            "level": nxt.number,
            "name": nxt.name,
            "threshold": rules.plain(nxt.threshold),
            "remaining": rules.plain(self.progress.remaining or Decimal(0)),
            "bonus_points": nxt.bonus_points,
        }


@dataclass(frozen=True)
class MemberBadges:
    earned: list[BadgeAward]
    progress: list[BadgeStanding]


@dataclass
class _Outcome:
    """What one event, order or referral did: badge levels awarded (as response items)."""

    awards: list[dict[str, Any]] = field(default_factory=list)


def member_badges(session: Session, member_id: str) -> MemberBadges:
    """The member's badge levels earned (revoked ones included, marked), newest first, and
    progress on every active badge toward its next level. Raises `MemberNotFoundError`."""
    member = members_service.get_member(session, member_id)
    earned = list(
        session.scalars(
            select(BadgeAward)
            .where(BadgeAward.member_id == member_id)
            .order_by(BadgeAward.awarded_at.desc(), BadgeAward.id.desc())
        )
    )
    now = clock.now()
    badges = session.scalars(select(Badge).where(Badge.active.is_(True)).order_by(Badge.id))
    standings = [
        BadgeStanding(
            badge,
            rules.progress(rules.levels_of(badge.levels), _metric(session, badge, member, now)),
        )
        for badge in badges
    ]
    return MemberBadges(earned=earned, progress=standings)


def _revoke_unreached(
    session: Session,
    member: Member,
    badges: list[ActiveBadge],
    now: dt.datetime,
    actor: str | None,
    *,
    reason: str,
    also: list[str] | None = None,
) -> None:
    """Store the members' metric of ``badges`` (and of the badges ``also`` names) and
    revoke every level, of those that say ``revoke_on_refund``, whose threshold it no
    longer reaches; bonus points are clawed back under the programme's refund policy."""
    by_id: dict[str, Badge | ActiveBadge] = {badge.id: badge for badge in badges}
    for badge_id in also or []:
        if badge_id not in by_id and (named := session.get(Badge, badge_id)) is not None:
            by_id[badge_id] = named
    for badge in by_id.values():
        value = _metric(session, badge, member, now)
        _store_progress(session, badge.id, member.id, value, now)
        if not badge.revoke_on_refund:
            continue
        levels = {level.number: level for level in rules.levels_of(badge.levels)}
        awards = session.scalars(
            select(BadgeAward).where(
                BadgeAward.badge_id == badge.id,
                BadgeAward.member_id == member.id,
                BadgeAward.revoked_at.is_(None),
            )
        )
        for award in awards:
            level = levels.get(award.level)
            if level is not None and value >= level.threshold:
                continue
            award.revoked_at = now
            award.points_clawed_back = 0
            if award.points:
                move = ledger.reverse_bonus(
                    session,
                    member_id=member.id,
                    points=award.points,
                    reason=f"Badge revoked ({reason}): {badge.name} {award.level_name}"[:500],
                    reference=("badge", award.id),
                    actor=actor,
                )
                award.points_clawed_back = -move.points


def _evaluate(
    session: Session,
    member: Member,
    badges: list[ActiveBadge],
    now: dt.datetime,
    actor: str | None,
    *,
    event_pk: str | None = None,
    order_pk: str | None = None,
    streak_now: int | None = None,
) -> _Outcome:
    """Award the levels of ``badges`` that the member's metric reaches and that the member
    does not have yet (a revoked level is not given again); store the metric for the
    leaderboards. The caller holds the member's wallet lock, so one member's awards are
    decided one transaction at a time; the unique (badge, member, level) key backs that."""
    outcome = _Outcome()
    if member.status != "active":
        return outcome
    insert = dialect_insert(session)
    at_once = session.get_bind().dialect.name == "postgresql"
    for badge in badges:
        have: set[int] | None
        if at_once and badge.rule in ORDER_RULES:
            value, have = _order_progress(session, badge, member.id, now)
        else:
            value = _metric(session, badge, member, now, streak_now=streak_now)
            have = _store_progress(session, badge.id, member.id, value, now)
        reached = rules.levels_reached(rules.levels_of(badge.levels), value)
        if not reached:
            continue
        if badge.rule in ("streak", "referrals") and not rules.in_window(
            now, badge.starts_at, badge.ends_at
        ):
            continue  # a challenge counts streaks and referrals only while it runs
        if have is None:
            have = set(
                session.scalars(
                    select(BadgeAward.level).where(
                        BadgeAward.badge_id == badge.id, BadgeAward.member_id == member.id
                    )
                )
            )
        for level in reached:
            if level.number in have:
                continue
            award_id = new_id("baw")
            inserted = session.execute(
                insert(BadgeAward)
                .values(
                    id=award_id,
                    badge_id=badge.id,
                    member_id=member.id,
                    level=level.number,
                    level_name=level.name,
                    points=level.bonus_points,
                    event_pk=event_pk,
                    order_pk=order_pk,
                    awarded_at=now,
                )
                .on_conflict_do_nothing()
                .returning(BadgeAward.id)
            ).scalar()
            if inserted is None:
                continue
            if level.bonus_points:
                ledger.credit_bonus(
                    session,
                    member_id=member.id,
                    points=level.bonus_points,
                    reason=f"Badge: {badge.name} {level.name}"[:500],
                    reference=("badge", award_id),
                    actor=actor,
                )
            publish(
                session,
                BadgeAwarded(
                    occurred_at=now,
                    member_id=member.id,
                    award_id=award_id,
                    badge_id=badge.id,
                    level=level.number,
                    level_name=level.name,
                    bonus_points=level.bonus_points,
                ),
            )
            outcome.awards.append(
                {
                    "award_id": award_id,
                    "badge_id": badge.id,
                    "name": badge.name,
                    "level": level.number,
                    "level_name": level.name,
                    "points": level.bonus_points,
                }
            )
    return outcome


def _metric(
    session: Session,
    badge: Badge | ActiveBadge,
    member: Member,
    now: dt.datetime,
    *,
    streak_now: int | None = None,
) -> Decimal:
    """The member's value of the badge's metric, counting only what happened inside the
    badge's window (streaks and qualified referrals are counted as of now)."""
    if badge.rule in rules.EVENT_RULES:
        query = select(CommunityEvent.properties).where(
            CommunityEvent.member_id == member.id, CommunityEvent.type == badge.event_type
        )
        if badge.starts_at is not None:
            query = query.where(CommunityEvent.occurred_at >= badge.starts_at)
        if badge.ends_at is not None:
            query = query.where(CommunityEvent.occurred_at < badge.ends_at)
        if badge.rule == "event_count":
            count = session.scalar(select(func.count()).select_from(query.subquery()))
            return Decimal(int(count or 0))
        return sum(
            (
                rules.numeric((props or {}).get(badge.property or ""))
                for props in session.scalars(query)
            ),
            Decimal(0),
        )
    if badge.rule == "streak":
        if streak_now is not None:
            return Decimal(streak_now)
        row = session.get(MemberStreak, member.id)
        if row is None:
            return Decimal(0)
        streak = rules.Streak(row.current, row.longest, row.last_date)
        today = rules.local_date(now, member.timezone)
        return Decimal(rules.streak_as_of(streak, today, get_settings(session).streak_grace_days))
    if badge.rule in ORDER_RULES:
        measure = "spend" if badge.rule == "spend" else "orders"
        activity = ledger.activity(
            session, member.id, since=badge.starts_at, until=badge.ends_at, measures=(measure,)
        )
        return Decimal(activity.spend if badge.rule == "spend" else activity.orders)
    return Decimal(referrals_service.qualified_referrals(session, member.id))


PROGRESS_LIMIT = Decimal(10) ** 15  # what the leaderboard column holds, with room to spare


def _store_progress(
    session: Session, badge_id: str, member_id: str, value: Decimal, now: dt.datetime
) -> set[int] | None:
    """Store the member's value of the badge's metric; on PostgreSQL, in the same statement,
    read the levels of the badge the member has (given or revoked; None elsewhere)."""
    # Kept to the column's scale and range (a sum of extreme values is shown as its limit).
    value = max(min(value, PROGRESS_LIMIT), -PROGRESS_LIMIT).quantize(Decimal("0.0001"))
    # One statement: insert, or update only when the value changed (updated_at orders ties
    # on the leaderboard: the first to reach a value stays ahead).
    dialect = session.get_bind().dialect.name
    result = session.execute(
        _progress_upsert(dialect),
        {"badge_id": badge_id, "member_id": member_id, "value": value, "updated_at": now},
    )
    levels = set(result.scalar() or ()) if dialect == "postgresql" else None
    loaded = session.identity_map.get(session.identity_key(BadgeProgress, (badge_id, member_id)))
    if loaded is not None:
        session.expire(loaded)
    return levels


@cache
def _progress_upsert(dialect: str) -> Any:
    """The progress upsert, built once per dialect (every accrual with a spend badge sends
    it); on PostgreSQL a data-modifying WITH whose query reads the member's levels of the
    badge (the caller holds the member's wallet lock, so none is being given meanwhile)."""
    insert = dialect_insert(dialect)
    upsert = insert(BadgeProgress).values(
        badge_id=bindparam("badge_id"),
        member_id=bindparam("member_id"),
        value=bindparam("value"),
        updated_at=bindparam("updated_at"),
    )
    upsert = upsert.on_conflict_do_update(
        index_elements=["badge_id", "member_id"],
        set_={"value": upsert.excluded.value, "updated_at": upsert.excluded.updated_at},
        where=BadgeProgress.value != upsert.excluded.value,
    )
    if dialect != "postgresql":
        return upsert
    return (
        select(func.array_agg(BadgeAward.level))
        .where(
            BadgeAward.badge_id == bindparam("badge_id"),
            BadgeAward.member_id == bindparam("member_id"),
        )
        .add_cte(upsert.cte("progress"))
    )


def _order_progress(
    session: Session, badge: Badge | ActiveBadge, member_id: str, now: dt.datetime
) -> tuple[Decimal, set[int]]:
    """`_metric` and `_store_progress` of a badge on orders, in one statement (PostgreSQL):
    the member's measure of the badge's window, stored, with the levels the member has."""
    statement = _order_progress_statement(
        badge.rule, badge.starts_at is None, badge.ends_at is None
    )
    value, levels = session.execute(
        statement,
        {
            "badge_id": badge.id,
            "member_id": member_id,
            "since": badge.starts_at,
            "until": badge.ends_at,
            "updated_at": now,
        },
    ).one()
    loaded = session.identity_map.get(session.identity_key(BadgeProgress, (badge.id, member_id)))
    if loaded is not None:
        session.expire(loaded)
    return Decimal(int(value)), set(levels or ())


@cache
def _order_progress_statement(measure: str, from_start: bool, to_now: bool) -> Any:
    """The measure (ledger's `order_measure`), the progress upsert on it (kept to the
    column's range, as `_store_progress` keeps it) and the member's levels of the badge. On
    the tables, not the mapped classes: `Session.execute` sends a Core statement without the
    ORM's work on it (about a third of the statement's CPU), and without its autoflush (the
    accrual writes its order before; awards and progress are written by Core statements)."""
    progress = cast(Table, BadgeProgress.__table__)
    awards = cast(Table, BadgeAward.__table__)
    metric = ledger.order_measure(measure, from_start, to_now).cte("metric")
    measured = select(metric.c.value).scalar_subquery()
    upsert = postgresql.insert(progress).values(
        badge_id=bindparam("badge_id"),
        member_id=bindparam("member_id"),
        value=func.least(measured, literal_column(str(PROGRESS_LIMIT))),
        updated_at=bindparam("updated_at"),
    )
    upsert = upsert.on_conflict_do_update(
        index_elements=["badge_id", "member_id"],
        set_={"value": upsert.excluded.value, "updated_at": upsert.excluded.updated_at},
        where=progress.c.value != upsert.excluded.value,
    )
    levels = (
        select(func.array_agg(awards.c.level))
        .where(
            awards.c.badge_id == bindparam("badge_id"),
            awards.c.member_id == bindparam("member_id"),
        )
        .scalar_subquery()
    )
    return select(measured, levels).add_cte(upsert.cte("progress"))


@dataclass(frozen=True)
class ActiveBadge:
    """What awarding needs of an active badge (the fields of `Badge` it reads)."""

    id: str
    name: str
    rule: str
    event_type: str | None
    property: str | None
    levels: tuple[dict[str, Any], ...]
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None
    revoke_on_refund: bool


def _load_active_badges(session: Session) -> tuple[ActiveBadge, ...]:
    return tuple(
        ActiveBadge(
            id=badge.id,
            name=badge.name,
            rule=badge.rule,
            event_type=badge.event_type,
            property=badge.property,
            levels=tuple(dict(level) for level in badge.levels or ()),
            starts_at=badge.starts_at,
            ends_at=badge.ends_at,
            revoke_on_refund=badge.revoke_on_refund,
        )
        for badge in session.scalars(select(Badge).where(Badge.active.is_(True)).order_by(Badge.id))
    )


def _active_badges(session: Session) -> tuple[ActiveBadge, ...]:
    """The active badges: cached per process behind the configuration's version
    (`loyalty.configcache`), as every order and event reads them."""
    return configcache.cached(session, "community.active_badges", _load_active_badges)
