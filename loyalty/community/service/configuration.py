"""What loyalty managers configure for the community: event types and their properties, event
rules (the points an event earns), badges with their levels and windows, and the community
settings (the grace days of check-in streaks). Every change is audited.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.audit import service as audit
from loyalty.community import rules
from loyalty.community.errors import (
    BadgeInUseError,
    BadgeNotFoundError,
    EventRuleExistsError,
    EventRuleNotFoundError,
    EventTypeExistsError,
    EventTypeInUseError,
    EventTypeNotFoundError,
    InvalidEventPropertyError,
    UnknownEventTypeError,
)
from loyalty.community.models import (
    Badge,
    BadgeAward,
    BadgeProgress,
    CommunityEvent,
    CommunitySettings,
    EventRule,
    EventType,
)
from loyalty.db import (
    Page,
    constraint_name,
    keyset_page,
    locked_row,
    new_id,
    retrying,
    settings_row,
    unit_of_work,
)
from loyalty.errors import InvalidFieldError

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


def get_settings(session: Session) -> CommunitySettings:
    """The community policy (the grace days of check-in streaks)."""
    return settings_row(session, CommunitySettings)


@retrying
def update_settings(session: Session, *, changes: dict[str, Any], actor: str) -> CommunitySettings:
    """Change the community policy (audited). Locks the settings row."""
    with unit_of_work(session):
        settings = settings_row(session, CommunitySettings, lock=True)
        with audit.recorded_update(
            session,
            settings,
            SETTINGS_FIELDS,
            actor=actor,
            entity_type="community_settings",
            entity_id="community",
        ):
            audit.apply_changes(settings, changes, SETTINGS_FIELDS)
        return settings


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
    return keyset_page(session, query, EventType.name, limit, cursor)


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
        with audit.recorded_update(
            session,
            event_type,
            EVENT_TYPE_FIELDS,
            actor=actor,
            entity_type="event_type",
            entity_id=name,
        ):
            if "properties" in changes:
                definitions = _definitions(changes["properties"] or {})
                for used in _numeric_properties_in_use(session, name):
                    if definitions.get(used, {}).get("type") not in rules.NUMERIC_TYPES:
                        raise InvalidEventPropertyError(
                            f"properties/{used}",
                            f"Property {used!r} is counted by a rule or badge; it must stay "
                            "numeric.",
                        )
                event_type.properties = definitions
            if "description" in changes:
                event_type.description = changes["description"]
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
        rule = locked_row(session, EventRule, rule_id, EventRuleNotFoundError(rule_id))
        with audit.recorded_update(
            session,
            rule,
            EVENT_RULE_FIELDS,
            actor=actor,
            entity_type="event_rule",
            entity_id=rule.id,
        ) as before:
            _check_event_rule(session, {**before, **changes})
            for name, value in changes.items():
                setattr(rule, name, value)
        return rule


@retrying
def delete_event_rule(session: Session, *, rule_id: str, actor: str) -> None:
    """Delete an event rule (audited); events already recorded keep their points. Raises
    `EventRuleNotFoundError`."""
    with unit_of_work(session):
        rule = locked_row(session, EventRule, rule_id, EventRuleNotFoundError(rule_id))
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
        with audit.recorded_update(
            session, badge, BADGE_FIELDS, actor=actor, entity_type="badge", entity_id=badge.id
        ) as before:
            _check_badge(session, {**before, **changes})
            if "levels" in changes:
                changes = {**changes, "levels": rules.stored_levels(changes["levels"])}
            for name, value in changes.items():
                setattr(badge, name, value)
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


def _definitions_of(session: Session, type_: str) -> dict[str, dict[str, Any]]:
    """The property definitions of an event type; the built-in types (``check_in``,
    ``nps.responded``) are known undeclared."""
    event_type = session.get(EventType, type_)
    if event_type is None:
        if type_ in rules.BUILT_IN_TYPES:
            return dict(rules.BUILT_IN_TYPES[type_])
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


def _lock_event_type(session: Session, name: str) -> EventType:
    return locked_row(session, EventType, name, EventTypeNotFoundError(name))


def _lock_badge(session: Session, badge_id: str) -> Badge:
    return locked_row(session, Badge, badge_id, BadgeNotFoundError(badge_id))
