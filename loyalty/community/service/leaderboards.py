"""Leaderboards: members who opted in, ranked by their metric on a badge (streaks as of today
in each member's time zone), and the member's choice to appear under a display name.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.community import rules
from loyalty.community.models import BadgeProgress, LeaderboardProfile, MemberStreak
from loyalty.community.service.configuration import get_badge, get_settings
from loyalty.db import dialect_insert, retrying, unit_of_work
from loyalty.errors import InvalidFieldError
from loyalty.members import service as members_service
from loyalty.members.models import Member


@dataclass(frozen=True)
class LeaderboardEntry:
    rank: int
    display_name: str
    value: Decimal


def leaderboard(session: Session, badge_id: str, *, limit: int = 10) -> list[LeaderboardEntry]:
    """The members who opted in, ranked by their metric on the badge (highest first, ties
    share a rank, the first to get there listed first), by display name only. Raises
    `BadgeNotFoundError`."""
    badge = get_badge(session, badge_id)
    if badge.rule == "streak":
        return _streak_leaderboard(session, limit)
    rows = session.execute(
        select(LeaderboardProfile.display_name, BadgeProgress.value)
        .join(LeaderboardProfile, LeaderboardProfile.member_id == BadgeProgress.member_id)
        .join(Member, Member.id == BadgeProgress.member_id)
        .where(
            BadgeProgress.badge_id == badge_id,
            BadgeProgress.value > 0,
            LeaderboardProfile.opted_in.is_(True),
            Member.status == "active",
        )
        .order_by(BadgeProgress.value.desc(), BadgeProgress.updated_at, BadgeProgress.member_id)
        .limit(limit)
    ).all()
    ranked = rules.rank([(str(name), rules.plain(Decimal(value))) for name, value in rows])
    return [LeaderboardEntry(position, name, value) for position, name, value in ranked]


def _streak_leaderboard(session: Session, limit: int) -> list[LeaderboardEntry]:
    """Streaks are ranked as of today in each member's time zone (a streak that lapsed since
    the last check-in counts 0), longest first, the earliest to reach it first."""
    grace = get_settings(session).streak_grace_days
    now = clock.now()
    rows = session.execute(
        select(LeaderboardProfile.display_name, MemberStreak, Member.timezone)
        .join(MemberStreak, MemberStreak.member_id == LeaderboardProfile.member_id)
        .join(Member, Member.id == LeaderboardProfile.member_id)
        .where(LeaderboardProfile.opted_in.is_(True), Member.status == "active")
    ).all()
    scored = []
    for name, row, timezone in rows:
        streak = rules.Streak(row.current, row.longest, row.last_date)
        value = rules.streak_as_of(streak, rules.local_date(now, timezone), grace)
        if value > 0:
            # The streak reached its length on its last day; earlier is ahead on a tie.
            scored.append((-value, row.last_date, str(name), value))
    scored.sort()
    ranked = rules.rank([(name, rules.plain(Decimal(value))) for *_, name, value in scored])
    return [LeaderboardEntry(position, name, value) for position, name, value in ranked[:limit]]


def get_leaderboard_profile(session: Session, member_id: str) -> LeaderboardProfile:
    """The member's leaderboard choice (not opted in when never set). Raises
    `MemberNotFoundError`."""
    members_service.get_member(session, member_id)
    profile = session.get(LeaderboardProfile, member_id)
    if profile is None:
        profile = LeaderboardProfile(member_id=member_id, opted_in=False, display_name=None)
    return profile


@retrying
def set_leaderboard_profile(
    session: Session, *, member_id: str, opted_in: bool, display_name: str | None = None
) -> LeaderboardProfile:
    """Opt the member in to leaderboards under ``display_name`` (required then), or out.
    Raises `MemberNotFoundError`, `InvalidFieldError`."""
    with unit_of_work(session):
        members_service.get_member(session, member_id)
        if opted_in and not display_name:
            raise InvalidFieldError("display_name", "A display name is needed to opt in.")
        values = {"opted_in": opted_in, "display_name": display_name, "updated_at": clock.now()}
        insert = dialect_insert(session)
        session.execute(
            insert(LeaderboardProfile)
            .values(member_id=member_id, **values)
            .on_conflict_do_update(index_elements=["member_id"], set_=values)
        )
        profile = session.get(LeaderboardProfile, member_id, populate_existing=True)
        assert profile is not None
        return profile
