"""Community: engagement events, event rules, check-ins and streaks, badges, challenges and
leaderboards.

Points move only through the ledger's helpers (`lock_member`, `credit_bonus`,
`reverse_bonus`) inside this module's units of work (or the ledger's, for the hooks). Locks
are taken in one order: the member's wallet first, then this module's rows; so events,
orders and refunds of one member queue, and each badge level is awarded once (the unique
(badge, member, level) key stands behind that).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.audit import service as audit
from loyalty.auth.rules import DEFAULT_CHANNEL
from loyalty.bus import publish
from loyalty.community import rules
from loyalty.community.events import BadgeAwarded
from loyalty.community.models import (
    Badge,
    BadgeAward,
    BadgeProgress,
    CommunityEvent,
    CommunitySettings,
    EventRule,
    EventType,
    LeaderboardProfile,
    MemberStreak,
)
from loyalty.db import (
    Page,
    constraint_name,
    dialect_insert,
    keyset_page,
    new_id,
    retrying,
    unit_of_work,
)
from loyalty.errors import (
    BadgeInUseError,
    BadgeNotFoundError,
    EventConflictError,
    EventRuleExistsError,
    EventRuleNotFoundError,
    EventTypeExistsError,
    EventTypeInUseError,
    EventTypeNotFoundError,
    InvalidEventPropertyError,
    InvalidFieldError,
    MemberNotActiveError,
    UnknownEventTypeError,
)
from loyalty.ledger import rules as ledger_rules
from loyalty.ledger import service as ledger
from loyalty.ledger.events import OrderRecorded, OrderRefunded
from loyalty.members import service as members_service
from loyalty.members.models import Member
from loyalty.referrals import service as referrals_service
from loyalty.referrals.events import ReferralClawedBack, ReferralQualified

EVENT_TYPE_FIELDS = ("description", "properties")
EVENT_RULE_FIELDS = (
    "event_type",
    "points",
    "per_unit_property",
    "points_per_unit",
    "cap",
    "cap_period",
    "active",
)
BADGE_FIELDS = (
    "name",
    "description",
    "rule",
    "event_type",
    "property",
    "levels",
    "starts_at",
    "ends_at",
    "revoke_on_refund",
    "active",
)
SETTINGS_FIELDS = ("streak_grace_days",)
ORDER_RULES = ("spend", "orders")


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


@dataclass(frozen=True)
class LeaderboardEntry:
    rank: int
    display_name: str
    value: Decimal


@dataclass
class _Outcome:
    """What one event, order or referral did: badge levels awarded (as response items)."""

    awards: list[dict[str, Any]] = field(default_factory=list)


# --- settings -------------------------------------------------------------------------------


def get_settings(session: Session) -> CommunitySettings:
    """The community policy (the grace days of check-in streaks)."""
    settings = session.get(CommunitySettings, 1)
    if settings is None:  # a database migrated before the row existed; never expected
        settings = CommunitySettings(id=1, streak_grace_days=0)
    return settings


@retrying
def update_settings(session: Session, *, changes: dict[str, Any], actor: str) -> CommunitySettings:
    """Change the community policy (audited). Locks the settings row."""
    with unit_of_work(session):
        settings = session.scalar(
            select(CommunitySettings).where(CommunitySettings.id == 1).with_for_update()
        )
        assert settings is not None, "the migration creates the settings row"
        before = audit.snapshot_of(settings, SETTINGS_FIELDS)
        for name in SETTINGS_FIELDS:
            if name in changes:
                setattr(settings, name, changes[name])
        settings.updated_at = clock.now()
        settings.updated_by = actor[:64]
        audit.record(
            session,
            actor=actor,
            action="updated",
            entity_type="community_settings",
            entity_id="community",
            before=before,
            after=audit.snapshot_of(settings, SETTINGS_FIELDS),
        )
        return settings


# --- event types ----------------------------------------------------------------------------


def get_event_type(session: Session, name: str) -> EventType:
    """The event type with this name. Raises `EventTypeNotFoundError`."""
    event_type = session.get(EventType, name)
    if event_type is None:
        raise EventTypeNotFoundError(name)
    return event_type


def list_event_types(
    session: Session, *, limit: int = 50, cursor: str | None = None
) -> Page[EventType]:
    """Event types by name, a page at a time."""
    query = select(EventType).order_by(EventType.name)
    if cursor is not None:
        query = query.where(EventType.name > cursor)
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=rows[-1].name if more else None)


@retrying
def create_event_type(
    session: Session,
    *,
    name: str,
    description: str | None = None,
    properties: dict[str, dict[str, Any]] | None = None,
    actor: str,
) -> EventType:
    """Declare an event type and its properties (audited). Raises `EventTypeExistsError`."""
    with unit_of_work(session):
        if session.get(EventType, name) is not None:
            raise EventTypeExistsError(name)
        now = clock.now()
        event_type = EventType(
            name=name,
            description=description,
            properties=_definitions(properties or {}),
            created_at=now,
            updated_at=now,
        )
        session.add(event_type)
        try:
            session.flush()
        except IntegrityError as error:
            if constraint_name(error) == "pk_event_types":
                raise EventTypeExistsError(name) from error
            raise
        audit.record(
            session,
            actor=actor,
            action="created",
            entity_type="event_type",
            entity_id=name,
            after=audit.snapshot_of(event_type, EVENT_TYPE_FIELDS),
        )
        return event_type


@retrying
def update_event_type(
    session: Session, *, name: str, changes: dict[str, Any], actor: str
) -> EventType:
    """Change an event type's description or properties (audited); events already recorded
    stay as they were. A property that a rule or badge counts must stay numeric. Locks the
    type. Raises `EventTypeNotFoundError`, `InvalidEventPropertyError`."""
    with unit_of_work(session):
        event_type = _lock_event_type(session, name)
        before = audit.snapshot_of(event_type, EVENT_TYPE_FIELDS)
        if "properties" in changes:
            definitions = _definitions(changes["properties"] or {})
            for used in _numeric_properties_in_use(session, name):
                if definitions.get(used, {}).get("type") not in rules.NUMERIC_TYPES:
                    raise InvalidEventPropertyError(
                        f"properties/{used}",
                        f"Property {used!r} is counted by a rule or badge; it must stay numeric.",
                    )
            event_type.properties = definitions
        if "description" in changes:
            event_type.description = changes["description"]
        event_type.updated_at = clock.now()
        audit.record(
            session,
            actor=actor,
            action="updated",
            entity_type="event_type",
            entity_id=name,
            before=before,
            after=audit.snapshot_of(event_type, EVENT_TYPE_FIELDS),
        )
        return event_type


@retrying
def delete_event_type(session: Session, *, name: str, actor: str) -> None:
    """Delete an event type that no event, rule or badge uses (audited); otherwise raise
    `EventTypeInUseError`. Raises `EventTypeNotFoundError`."""
    with unit_of_work(session):
        event_type = _lock_event_type(session, name)
        used = (
            session.scalar(select(exists().where(CommunityEvent.type == name)))
            or session.scalar(select(exists().where(EventRule.event_type == name)))
            or session.scalar(select(exists().where(Badge.event_type == name)))
        )
        if used:
            raise EventTypeInUseError(name)
        before = audit.snapshot_of(event_type, EVENT_TYPE_FIELDS)
        session.delete(event_type)
        audit.record(
            session,
            actor=actor,
            action="deleted",
            entity_type="event_type",
            entity_id=name,
            before=before,
        )


# --- event rules ----------------------------------------------------------------------------


def get_event_rule(session: Session, rule_id: str) -> EventRule:
    """The event rule with this id. Raises `EventRuleNotFoundError`."""
    rule = session.get(EventRule, rule_id)
    if rule is None:
        raise EventRuleNotFoundError(rule_id)
    return rule


def list_event_rules(
    session: Session, *, limit: int = 50, cursor: str | None = None
) -> Page[EventRule]:
    """Event rules in creation order, a page at a time."""
    return keyset_page(
        session, select(EventRule).order_by(EventRule.id), EventRule.id, limit, cursor
    )


@retrying
def create_event_rule(session: Session, *, actor: str, **values: Any) -> EventRule:
    """Give points for events of a type (audited): ``points`` per event plus
    ``points_per_unit`` per unit of the numeric ``per_unit_property``, at most ``cap``
    rewarded events per member per ``cap_period``. One rule per type. Raises
    `UnknownEventTypeError`, `InvalidEventPropertyError`, `InvalidFieldError`,
    `EventRuleExistsError`."""
    with unit_of_work(session):
        values = {"points": 0, "active": True, **values}
        _check_event_rule(session, values)
        existing = session.scalar(
            select(EventRule.id).where(EventRule.event_type == values["event_type"])
        )
        if existing is not None:
            raise EventRuleExistsError(values["event_type"], existing)
        now = clock.now()
        rule = EventRule(id=new_id("evr"), created_at=now, updated_at=now, **values)
        session.add(rule)
        try:
            session.flush()
        except IntegrityError as error:
            if constraint_name(error) == "uq_event_rules_event_type":
                raise EventRuleExistsError(values["event_type"], "?") from error
            raise
        audit.record(
            session,
            actor=actor,
            action="created",
            entity_type="event_rule",
            entity_id=rule.id,
            after=audit.snapshot_of(rule, EVENT_RULE_FIELDS),
        )
        return rule


@retrying
def update_event_rule(
    session: Session, *, rule_id: str, changes: dict[str, Any], actor: str
) -> EventRule:
    """Change an event rule (audited); events already recorded keep their points. Locks the
    rule. Raises `EventRuleNotFoundError` and the errors of `create_event_rule`."""
    with unit_of_work(session):
        rule = session.scalar(
            select(EventRule)
            .where(EventRule.id == rule_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if rule is None:
            raise EventRuleNotFoundError(rule_id)
        before = audit.snapshot_of(rule, EVENT_RULE_FIELDS)
        _check_event_rule(session, {**before, **changes})
        for name, value in changes.items():
            setattr(rule, name, value)
        rule.updated_at = clock.now()
        audit.record(
            session,
            actor=actor,
            action="updated",
            entity_type="event_rule",
            entity_id=rule.id,
            before=before,
            after=audit.snapshot_of(rule, EVENT_RULE_FIELDS),
        )
        return rule


@retrying
def delete_event_rule(session: Session, *, rule_id: str, actor: str) -> None:
    """Delete an event rule (audited); events already recorded keep their points. Raises
    `EventRuleNotFoundError`."""
    with unit_of_work(session):
        rule = session.scalar(select(EventRule).where(EventRule.id == rule_id).with_for_update())
        if rule is None:
            raise EventRuleNotFoundError(rule_id)
        before = audit.snapshot_of(rule, EVENT_RULE_FIELDS)
        session.delete(rule)
        audit.record(
            session,
            actor=actor,
            action="deleted",
            entity_type="event_rule",
            entity_id=rule_id,
            before=before,
        )


# --- badges ---------------------------------------------------------------------------------


def get_badge(session: Session, badge_id: str) -> Badge:
    """The badge with this id. Raises `BadgeNotFoundError`."""
    badge = session.get(Badge, badge_id)
    if badge is None:
        raise BadgeNotFoundError(badge_id)
    return badge


def list_badges(
    session: Session,
    *,
    active: bool | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Badge]:
    """Badges in creation order, a page at a time."""
    query = select(Badge).order_by(Badge.id)
    if active is not None:
        query = query.where(Badge.active.is_(active))
    return keyset_page(session, query, Badge.id, limit, cursor)


@retrying
def create_badge(session: Session, *, actor: str, **values: Any) -> Badge:
    """Define a badge (audited): its rule, levels (thresholds strictly increasing, optional
    bonus points each), an optional window ``[starts_at, ends_at)`` (a challenge) and whether
    a refund of the order that earned a level revokes it. Members earn it from their next
    event, order or qualified referral on. Raises `UnknownEventTypeError`,
    `InvalidEventPropertyError`, `InvalidFieldError`."""
    with unit_of_work(session):
        values = {"revoke_on_refund": False, "active": True, **values}
        _check_badge(session, values)
        values["levels"] = rules.stored_levels(values["levels"])
        now = clock.now()
        badge = Badge(id=new_id("bdg"), created_at=now, updated_at=now, **values)
        session.add(badge)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="created",
            entity_type="badge",
            entity_id=badge.id,
            after=audit.snapshot_of(badge, BADGE_FIELDS),
        )
        return badge


@retrying
def update_badge(session: Session, *, badge_id: str, changes: dict[str, Any], actor: str) -> Badge:
    """Change a badge (audited; its rule, event type and property stay); levels already
    awarded stay awarded. Locks the badge. Raises `BadgeNotFoundError`, `InvalidFieldError`."""
    with unit_of_work(session):
        badge = _lock_badge(session, badge_id)
        before = audit.snapshot_of(badge, BADGE_FIELDS)
        _check_badge(session, {**before, **changes})
        if "levels" in changes:
            changes = {**changes, "levels": rules.stored_levels(changes["levels"])}
        for name, value in changes.items():
            setattr(badge, name, value)
        badge.updated_at = clock.now()
        audit.record(
            session,
            actor=actor,
            action="updated",
            entity_type="badge",
            entity_id=badge.id,
            before=before,
            after=audit.snapshot_of(badge, BADGE_FIELDS),
        )
        return badge


@retrying
def delete_badge(session: Session, *, badge_id: str, actor: str) -> None:
    """Delete a badge never awarded (audited); otherwise raise `BadgeInUseError` (deactivate
    it instead). Raises `BadgeNotFoundError`."""
    with unit_of_work(session):
        badge = _lock_badge(session, badge_id)
        if session.scalar(select(exists().where(BadgeAward.badge_id == badge_id))):
            raise BadgeInUseError(badge_id)
        before = audit.snapshot_of(badge, BADGE_FIELDS)
        session.execute(delete(BadgeProgress).where(BadgeProgress.badge_id == badge_id))
        session.delete(badge)
        audit.record(
            session,
            actor=actor,
            action="deleted",
            entity_type="badge",
            entity_id=badge_id,
            before=before,
        )


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


# --- events ---------------------------------------------------------------------------------


@retrying
def record_event(
    session: Session,
    *,
    event_id: str,
    member_id: str,
    type: str,
    occurred_at: dt.datetime,
    properties: dict[str, Any] | None = None,
    channel_id: str = DEFAULT_CHANNEL,
    client_id: str | None = None,
    actor: str | None = None,
    backfill: bool = False,
) -> ledger.Replayable:
    """Record an engagement event: credit its rule's points, count a check-in in the
    member's streak, and award the badge levels it reaches, all in one transaction.

    Idempotent on ``(channel_id, event_id)``: the same event again gives the first result
    (``created`` False), whichever client of the channel reports it; with another body,
    `EventConflictError`. Events dated more than the programme's maximum age ago are refused
    (`EventTooOldError`) unless ``backfill`` (history). A ``check_in`` counts once
    per local day in the member's time zone and earns points only when it counts. Locks the
    member's wallet. Raises `UnknownEventTypeError`, `InvalidEventPropertyError`,
    `EventInFutureError`, `MemberNotFoundError`, `MemberNotActiveError`.
    """
    return _ingest(
        session,
        channel_id=channel_id,
        client_id=client_id,
        event_id=event_id,
        member_id=member_id,
        type_=type,
        occurred_at=occurred_at,
        properties=properties,
        actor=actor,
        backfill=backfill,
    )


@retrying
def check_in(
    session: Session,
    *,
    member_id: str,
    event_id: str | None = None,
    occurred_at: dt.datetime | None = None,
    channel_id: str = DEFAULT_CHANNEL,
    client_id: str | None = None,
    actor: str | None = None,
    backfill: bool = False,
) -> ledger.Replayable:
    """Record a ``check_in`` event for the member (see `record_event`); without an
    ``event_id`` each call is a new event, at ``occurred_at`` or now."""
    return _ingest(
        session,
        channel_id=channel_id,
        client_id=client_id,
        event_id=event_id or new_id("chk"),
        member_id=member_id,
        type_=rules.CHECK_IN,
        occurred_at=occurred_at,
        properties={},
        actor=actor,
        backfill=backfill,
    )


def _ingest(
    session: Session,
    *,
    channel_id: str,
    client_id: str | None,
    event_id: str,
    member_id: str,
    type_: str,
    occurred_at: dt.datetime | None,
    properties: dict[str, Any] | None,
    actor: str | None,
    backfill: bool,
) -> ledger.Replayable:
    properties = properties or {}
    # The request as sent: a retry that left occurred_at out (now) is the same request.
    fingerprint = ledger_rules.request_fingerprint(
        "event",
        event_id,
        {
            "member_id": member_id,
            "type": type_,
            "occurred_at": _timestamp(occurred_at) if occurred_at else None,
            "properties": properties,
        },
    )
    occurred_at = occurred_at or clock.now()
    with unit_of_work(session):
        replay = _replay(session, channel_id, event_id, fingerprint)
        if replay is not None:
            return replay
        definitions = _definitions_of(session, type_)
        problems = rules.property_problems(definitions, properties)
        if problems:
            name, detail = problems[0]
            if name not in definitions:
                # An undeclared key is the client's own: point at the object, not at the key.
                declared = ", ".join(sorted(definitions)) or "none"
                raise InvalidEventPropertyError(
                    "properties", f"{detail} The properties of this type are: {declared}."
                )
            raise InvalidEventPropertyError(f"properties/{name}", detail, property=name)
        now = clock.now()
        ledger.check_age(
            ledger.get_settings(session),
            occurred_at,
            now,
            field="occurred_at",
            kind="event",
            history=backfill,
        )
        member = ledger.lock_member(session, member_id)
        # Another request with this event id may have committed while this one waited.
        replay = _replay(session, channel_id, event_id, fingerprint)
        if replay is not None:
            return replay
        if member.status != "active":
            raise MemberNotActiveError(member.id, member.status)
        day = rules.local_date(occurred_at, member.timezone)
        event = CommunityEvent(
            id=new_id("evt"),
            channel_id=channel_id,
            client_id=client_id,
            event_id=event_id,
            member_id=member_id,
            type=type_,
            occurred_at=occurred_at,
            local_date=day,
            properties=properties,
            points=0,
            request_hash=fingerprint,
            response={},
            created_at=now,
        )
        streak_body: dict[str, Any] | None = None
        streak_now: int | None = None
        counts = True
        if type_ == rules.CHECK_IN:
            streak, counts = _advance_streak(session, member_id, day, now)
            streak_now = streak.current
            streak_body = {"current": streak.current, "longest": streak.longest, "counted": counts}
        event.points = _event_points(session, member_id, type_, day, properties) if counts else 0
        session.add(event)
        try:
            session.flush()
        except IntegrityError as error:
            # The same event id for another member, committed meanwhile.
            if constraint_name(error) == "uq_community_events_channel_id_event_id":
                raise EventConflictError(event_id) from error
            raise
        if event.points:
            ledger.credit_bonus(
                session,
                member_id=member_id,
                points=event.points,
                reason=f"Event: {type_}"[:500],
                reference=("event", event.id),
                actor=actor,
            )
        badges = [
            badge
            for badge in _active_badges(session)
            if (badge.rule in rules.EVENT_RULES and badge.event_type == type_)
            or (badge.rule == "streak" and type_ == rules.CHECK_IN)
        ]
        outcome = _evaluate(
            session, member, badges, now, actor, event_pk=event.id, streak_now=streak_now
        )
        event.response = {
            "id": event.id,
            "event_id": event_id,
            "member_id": member_id,
            "type": type_,
            "occurred_at": _timestamp(occurred_at),
            "properties": properties,
            "points": event.points,
            "badges": outcome.awards,
            "streak": streak_body,
            "balance": _balance(session, member_id).as_dict(),
        }
        return ledger.Replayable(event.response, created=True)


# --- subscribers: orders and referrals ------------------------------------------------------


def on_order_recorded(session: Session, event: OrderRecorded) -> None:
    """Subscriber: an order was recorded, the member's wallet locked: award the spend and
    order-count badge levels the order reaches (with their bonus points)."""
    badges = [badge for badge in _active_badges(session) if badge.rule in ORDER_RULES]
    if not badges:
        return
    member = members_service.get_member(session, event.member_id)
    _evaluate(session, member, badges, event.occurred_at, event.actor, order_pk=event.order_pk)


def on_order_refunded(session: Session, event: OrderRefunded) -> None:
    """Subscriber: a refund of the order was written, the member's wallet locked: refresh
    the member's spend and order
    metrics, and revoke the levels that this order earned, of badges that say
    ``revoke_on_refund``, whose threshold the member no longer reaches; their bonus points
    are clawed back under the programme's refund policy."""
    badges = [badge for badge in _active_badges(session) if badge.rule in ORDER_RULES]
    earned_by_order = list(
        session.scalars(
            select(BadgeAward.badge_id).where(
                BadgeAward.order_pk == event.order_pk, BadgeAward.revoked_at.is_(None)
            )
        )
    )
    if not badges and not earned_by_order:
        return
    member = members_service.get_member(session, event.member_id)
    _revoke_unreached(
        session,
        member,
        badges,
        event.occurred_at,
        event.actor,
        also=earned_by_order,
        reason="order refunded",
    )


def on_referral_clawed_back(session: Session, event: ReferralClawedBack) -> None:
    """Subscriber: one of the referrer's referrals was clawed back, the referrer's wallet
    locked: refresh the qualified-referral metric and revoke the levels no longer reached of
    badges that say ``revoke_on_refund``."""
    badges = [badge for badge in _active_badges(session) if badge.rule == "referrals"]
    if badges:
        member = members_service.get_member(session, event.referrer_id)
        _revoke_unreached(
            session, member, badges, event.occurred_at, event.actor, reason="referral clawed back"
        )


def _revoke_unreached(
    session: Session,
    member: Member,
    badges: list[Badge],
    now: dt.datetime,
    actor: str | None,
    *,
    reason: str,
    also: list[str] | None = None,
) -> None:
    """Store the members' metric of ``badges`` (and of the badges ``also`` names) and
    revoke every level, of those that say ``revoke_on_refund``, whose threshold it no
    longer reaches; bonus points are clawed back under the programme's refund policy."""
    by_id = {badge.id: badge for badge in badges}
    for badge_id in also or []:
        if badge_id not in by_id and (badge := session.get(Badge, badge_id)) is not None:
            by_id[badge_id] = badge
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


def on_referral_qualified(session: Session, event: ReferralQualified) -> None:
    """Subscriber: one of the referrer's referrals qualified, the referrer's wallet locked:
    award the qualified-referral badge levels reached (with their bonus points)."""
    badges = [badge for badge in _active_badges(session) if badge.rule == "referrals"]
    if not badges:
        return
    member = members_service.get_member(session, event.referrer_id)
    _evaluate(session, member, badges, event.occurred_at, event.actor)


def run_due(session: Session, *, batch_size: int = 200) -> dict[str, int]:
    """Due community work for ``loyalty jobs run``: none. Badges are awarded in the
    transaction of what earned them, and a challenge simply stops counting at its end."""
    return {}


# --- private helpers ------------------------------------------------------------------------


def _evaluate(
    session: Session,
    member: Member,
    badges: list[Badge],
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
    for badge in badges:
        value = _metric(session, badge, member, now, streak_now=streak_now)
        _store_progress(session, badge.id, member.id, value, now)
        reached = rules.levels_reached(rules.levels_of(badge.levels), value)
        if not reached:
            continue
        if badge.rule in ("streak", "referrals") and not rules.in_window(
            now, badge.starts_at, badge.ends_at
        ):
            continue  # a challenge counts streaks and referrals only while it runs
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
    badge: Badge,
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
) -> None:
    # Kept to the column's scale and range (a sum of extreme values is shown as its limit).
    value = max(min(value, PROGRESS_LIMIT), -PROGRESS_LIMIT).quantize(Decimal("0.0001"))
    row = session.get(BadgeProgress, (badge_id, member_id))
    if row is None:
        session.execute(
            dialect_insert(session)(BadgeProgress)
            .values(badge_id=badge_id, member_id=member_id, value=value, updated_at=now)
            .on_conflict_do_update(
                index_elements=["badge_id", "member_id"],
                set_={"value": value, "updated_at": now},
            )
        )
    elif Decimal(row.value) != value:
        # updated_at orders ties on the leaderboard: the first to reach a value stays ahead.
        row.value = value
        row.updated_at = now


def _advance_streak(
    session: Session, member_id: str, day: dt.date, now: dt.datetime
) -> tuple[rules.Streak, bool]:
    row = session.get(MemberStreak, member_id, populate_existing=True)
    if row is None:
        row = MemberStreak(member_id=member_id, current=0, longest=0, last_date=None)
        session.add(row)
    grace = get_settings(session).streak_grace_days
    streak, counted = rules.advance_streak(
        rules.Streak(row.current, row.longest, row.last_date), day, grace
    )
    row.current, row.longest, row.last_date = streak.current, streak.longest, streak.last_date
    row.updated_at = now
    return streak, counted


def _event_points(
    session: Session, member_id: str, type_: str, day: dt.date, properties: dict[str, Any]
) -> int:
    rule = session.scalar(
        select(EventRule).where(EventRule.event_type == type_, EventRule.active.is_(True))
    )
    if rule is None:
        return 0
    rewarded = 0
    if rule.cap is not None and rule.cap_period is not None:
        start, end = rules.cap_period_bounds(day, rule.cap_period)
        rewarded = int(
            session.scalar(
                select(func.count())
                .select_from(CommunityEvent)
                .where(
                    CommunityEvent.member_id == member_id,
                    CommunityEvent.type == type_,
                    CommunityEvent.points > 0,
                    CommunityEvent.local_date >= start,
                    CommunityEvent.local_date < end,
                )
            )
            or 0
        )
    terms = rules.EventRuleTerms(
        points=rule.points,
        per_unit_property=rule.per_unit_property,
        points_per_unit=Decimal(rule.points_per_unit) if rule.points_per_unit else None,
        cap=rule.cap,
        cap_period=rule.cap_period,
    )
    return rules.event_points(terms, properties, rewarded)


def _replay(
    session: Session, channel_id: str, event_id: str, fingerprint: str
) -> ledger.Replayable | None:
    existing = session.scalar(
        select(CommunityEvent)
        .where(CommunityEvent.channel_id == channel_id, CommunityEvent.event_id == event_id)
        .execution_options(populate_existing=True)
    )
    if existing is None:
        return None
    if existing.request_hash != fingerprint:
        raise EventConflictError(event_id)
    return ledger.Replayable(existing.response, created=False)


def _definitions_of(session: Session, type_: str) -> dict[str, dict[str, Any]]:
    """The property definitions of an event type; ``check_in`` is known undeclared."""
    event_type = session.get(EventType, type_)
    if event_type is None:
        if type_ == rules.CHECK_IN:
            return {}
        raise UnknownEventTypeError("type", type_)
    return dict(event_type.properties or {})


def _definitions(properties: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: {"type": spec["type"], "required": bool(spec.get("required", False))}
        for name, spec in sorted(properties.items())
    }


def _numeric_properties_in_use(session: Session, type_: str) -> set[str]:
    used = set(
        session.scalars(
            select(EventRule.per_unit_property).where(
                EventRule.event_type == type_, EventRule.per_unit_property.is_not(None)
            )
        )
    )
    used |= set(
        session.scalars(
            select(Badge.property).where(Badge.event_type == type_, Badge.property.is_not(None))
        )
    )
    return {name for name in used if name}


def _check_numeric_property(
    session: Session, field_name: str, type_: str, name: str | None
) -> None:
    if name is None:
        return
    definitions = _definitions_of(session, type_)
    if definitions.get(name, {}).get("type") not in rules.NUMERIC_TYPES:
        raise InvalidEventPropertyError(
            field_name, "The event type has no numeric property of this name."
        )


def _check_event_rule(session: Session, values: dict[str, Any]) -> None:
    type_ = values["event_type"]
    if session.get(EventType, type_) is None:
        raise UnknownEventTypeError("event_type", type_)
    if (values.get("per_unit_property") is None) != (values.get("points_per_unit") is None):
        raise InvalidFieldError(
            "points_per_unit", "per_unit_property and points_per_unit go together."
        )
    if (values.get("cap") is None) != (values.get("cap_period") is None):
        raise InvalidFieldError("cap_period", "cap and cap_period go together.")
    if not values.get("points") and not values.get("points_per_unit"):
        raise InvalidFieldError("points", "Give points, points_per_unit, or both.")
    _check_numeric_property(session, "per_unit_property", type_, values.get("per_unit_property"))


def _check_badge(session: Session, values: dict[str, Any]) -> None:
    rule = values["rule"]
    type_ = values.get("event_type")
    if rule in rules.EVENT_RULES:
        if type_ is None:
            raise InvalidFieldError("event_type", f"A {rule} badge names an event type.")
        if session.get(EventType, type_) is None:
            raise UnknownEventTypeError("event_type", type_)
    elif type_ is not None:
        raise InvalidFieldError("event_type", f"A {rule} badge counts no event type.")
    if rule == "property_sum":
        if values.get("property") is None:
            raise InvalidFieldError("property", "A property_sum badge names a numeric property.")
        _check_numeric_property(session, "property", str(type_), values["property"])
    elif values.get("property") is not None:
        raise InvalidFieldError("property", f"A {rule} badge sums no property.")
    problems = rules.level_problems(values.get("levels") or [])
    if problems:
        raise InvalidFieldError("levels", problems[0])
    start, end = values.get("starts_at"), values.get("ends_at")
    if start is not None and end is not None and end <= start:
        raise InvalidFieldError("ends_at", "Must be after starts_at.")


def _active_badges(session: Session) -> list[Badge]:
    return list(session.scalars(select(Badge).where(Badge.active.is_(True)).order_by(Badge.id)))


def _lock_event_type(session: Session, name: str) -> EventType:
    event_type = session.scalar(
        select(EventType)
        .where(EventType.name == name)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if event_type is None:
        raise EventTypeNotFoundError(name)
    return event_type


def _lock_badge(session: Session, badge_id: str) -> Badge:
    badge = session.scalar(
        select(Badge)
        .where(Badge.id == badge_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if badge is None:
        raise BadgeNotFoundError(badge_id)
    return badge


def _balance(session: Session, member_id: str) -> ledger.Balance:
    return ledger.Balance.of(ledger.points_summaries(session, [member_id]).get(member_id))


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
