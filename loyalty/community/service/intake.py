"""Engagement events coming in: recording a storefront's event (idempotent on its event id per
channel), check-ins and the member's daily streak, the points an event's rule gives, and the
badge levels the event reaches, in one unit of work.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loyalty import clock, configcache
from loyalty.auth.rules import DEFAULT_CHANNEL
from loyalty.community import rules
from loyalty.community.errors import (
    EventConflictError,
    InvalidEventPropertyError,
    UnknownEventTypeError,
)
from loyalty.community.models import CommunityEvent, EventRule, EventType, MemberStreak
from loyalty.community.service.badges import _active_badges, _evaluate
from loyalty.community.service.configuration import get_settings
from loyalty.db import constraint_name, new_id, retrying, unit_of_work
from loyalty.errors import MemberNotActiveError
from loyalty.ledger import rules as ledger_rules
from loyalty.ledger import service as ledger


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
        definitions = _definitions(session, type_)
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


@dataclass(frozen=True)
class _EventConfiguration:
    """The event types' property definitions and the active event rules, as every event
    reads them: cached per process behind the configuration's version
    (`loyalty.configcache`)."""

    definitions: dict[str, dict[str, dict[str, Any]]]  # by type
    event_rules: dict[str, rules.EventRuleTerms]  # by type


def _load_event_configuration(session: Session) -> _EventConfiguration:
    terms = {
        rule.event_type: rules.EventRuleTerms(
            points=rule.points,
            per_unit_property=rule.per_unit_property,
            points_per_unit=Decimal(rule.points_per_unit) if rule.points_per_unit else None,
            cap=rule.cap,
            cap_period=rule.cap_period,
        )
        for rule in session.scalars(
            select(EventRule).where(EventRule.active.is_(True)).order_by(EventRule.id)
        )
    }
    definitions = {
        event_type.name: dict(event_type.properties or {})
        for event_type in session.scalars(select(EventType))
    }
    return _EventConfiguration(definitions, terms)


def _event_configuration(session: Session) -> _EventConfiguration:
    return configcache.cached(session, "community.events", _load_event_configuration)


def _definitions(session: Session, type_: str) -> dict[str, dict[str, Any]]:
    """The property definitions of an event type; the built-in types (``check_in``,
    ``nps.responded``) are known undeclared."""
    definitions = _event_configuration(session).definitions.get(type_)
    if definitions is None:
        if type_ in rules.BUILT_IN_TYPES:
            return dict(rules.BUILT_IN_TYPES[type_])
        raise UnknownEventTypeError("type", type_)
    return definitions


def _event_points(
    session: Session, member_id: str, type_: str, day: dt.date, properties: dict[str, Any]
) -> int:
    terms = _event_configuration(session).event_rules.get(type_)
    if terms is None:
        return 0
    rewarded = 0
    if terms.cap is not None and terms.cap_period is not None:
        start, end = rules.cap_period_bounds(day, terms.cap_period)
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


def _balance(session: Session, member_id: str) -> ledger.Balance:
    return ledger.Balance.of(ledger.points_summaries(session, [member_id]).get(member_id))


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
