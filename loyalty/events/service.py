"""Webhook endpoints: create, change, delete, rotate their secrets, read their delivery log and
replay events to them; the lifecycle triggers' settings. Configuration changes are audited
(secrets never appear in the trail).

Secrets are generated here, returned once (`NewSecret`) and stored sealed
(`loyalty.sealing`); nothing else ever shows them again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import Boolean, Integer, String, insert, literal, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import Label

from loyalty import clock
from loyalty.audit import service as audit
from loyalty.db import (
    Page,
    UTCDateTime,
    keyset_page,
    locked_row,
    new_id,
    retrying,
    settings_row,
    unit_of_work,
)
from loyalty.errors import InvalidFieldError
from loyalty.events import rules, transport
from loyalty.events.delivery import SECRET_PURPOSE
from loyalty.events.errors import (
    OutboxEventNotFoundError,
    UnknownEventTypeFilterError,
    WebhookEndpointDisabledError,
    WebhookEndpointNotFoundError,
    WebhookUrlNotAllowedError,
)
from loyalty.events.models import (
    LifecycleSettings,
    OutboxEvent,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from loyalty.sealing import seal

ENDPOINT_FIELDS = ("url", "event_types", "enabled", "description", "disabled_reason")
LIFECYCLE_FIELDS = (
    "first_order_enabled",
    "expiring_soon_enabled",
    "birthday_enabled",
    "inactive_enabled",
    "expiring_soon_days",
    "inactive_days",
)
_LIFECYCLE_RANGES = {
    "expiring_soon_days": rules.EXPIRING_SOON_DAYS,
    "inactive_days": rules.INACTIVE_DAYS,
}
# How long the previous secret keeps signing after a rotation, unless the call says.
DEFAULT_OVERLAP = dt.timedelta(hours=24)
MAX_OVERLAP = dt.timedelta(days=7)


@dataclass(frozen=True)
class EndpointWithSecret:
    """An endpoint and its new signing secret, as the create and rotate calls answer."""

    endpoint: WebhookEndpoint
    secret: str

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.endpoint, name)


def _check_url(url: str) -> None:
    try:
        transport.check_url(url, allow_private=bool(current_app.config["WEBHOOKS_ALLOW_PRIVATE"]))
    except transport.TargetRefusedError as error:
        raise WebhookUrlNotAllowedError(error.reason) from None


def _filters(event_types: list[str]) -> list[str]:
    try:
        filters = rules.normalise_filters(event_types)
    except ValueError as error:
        raise UnknownEventTypeFilterError(len(error.args[0])) from None
    if not filters:
        raise InvalidFieldError("event_types", "Name at least one event type (or *).")
    return filters


def get_endpoint(session: Session, endpoint_id: str) -> WebhookEndpoint:
    """The endpoint with this id. Raises `WebhookEndpointNotFoundError`."""
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise WebhookEndpointNotFoundError(endpoint_id)
    return endpoint


def _lock_endpoint(session: Session, endpoint_id: str) -> WebhookEndpoint:
    return locked_row(
        session, WebhookEndpoint, endpoint_id, WebhookEndpointNotFoundError(endpoint_id)
    )


def list_endpoints(
    session: Session,
    *,
    enabled: bool | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[WebhookEndpoint]:
    """Endpoints in creation order, a page at a time."""
    query = select(WebhookEndpoint).order_by(WebhookEndpoint.id)
    if enabled is not None:
        query = query.where(WebhookEndpoint.enabled.is_(enabled))
    return keyset_page(session, query, WebhookEndpoint.id, limit, cursor)


@retrying
def create_endpoint(
    session: Session,
    *,
    actor: str,
    url: str,
    event_types: list[str],
    enabled: bool = True,
    description: str | None = None,
) -> EndpointWithSecret:
    """Add an endpoint with a new signing secret (audited, secret excepted); the secret is
    returned here and never again. Its host is resolved and must be public (unless
    ``WEBHOOKS_ALLOW_PRIVATE``). Raises `WebhookUrlNotAllowedError`,
    `UnknownEventTypeFilterError`, `InvalidFieldError`."""
    filters = _filters(event_types)
    _check_url(url)  # before the transaction: DNS may take a moment
    with unit_of_work(session):
        now = clock.now()
        secret = rules.new_secret()
        endpoint = WebhookEndpoint(
            id=new_id("whe"),
            url=url,
            event_types=filters,
            enabled=enabled,
            description=description,
            secret=seal(secret, purpose=SECRET_PURPOSE),
            created_at=now,
            updated_at=now,
        )
        session.add(endpoint)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="created",
            entity_type="webhook_endpoint",
            entity_id=endpoint.id,
            after=audit.snapshot_of(endpoint, ENDPOINT_FIELDS),
        )
        return EndpointWithSecret(endpoint, secret)


@retrying
def update_endpoint(
    session: Session, *, endpoint_id: str, changes: dict[str, Any], actor: str
) -> WebhookEndpoint:
    """Change an endpoint (audited); fields absent from ``changes`` stay. Enabling it clears
    ``disabled_reason`` and its failure streak; deliveries still pending go on. Locks the
    endpoint row. Raises `WebhookEndpointNotFoundError`, `WebhookUrlNotAllowedError`,
    `UnknownEventTypeFilterError`."""
    if "event_types" in changes:
        changes = {**changes, "event_types": _filters(changes["event_types"])}
    if "url" in changes:
        _check_url(changes["url"])
    with unit_of_work(session):
        endpoint = _lock_endpoint(session, endpoint_id)
        before = audit.snapshot_of(endpoint, ENDPOINT_FIELDS)
        for name, value in changes.items():
            setattr(endpoint, name, value)
        if changes.get("enabled") is True:
            endpoint.disabled_reason = None
            endpoint.failing_since = None
        after = audit.snapshot_of(endpoint, ENDPOINT_FIELDS)
        if after != before:
            endpoint.updated_at = clock.now()
        audit.record(
            session,
            actor=actor,
            action="updated",
            entity_type="webhook_endpoint",
            entity_id=endpoint.id,
            before=before,
            after=after,
        )
        return endpoint


@retrying
def delete_endpoint(session: Session, *, endpoint_id: str, actor: str) -> None:
    """Delete an endpoint, its pending deliveries and its delivery log (audited). Raises
    `WebhookEndpointNotFoundError`."""
    with unit_of_work(session):
        endpoint = _lock_endpoint(session, endpoint_id)
        before = audit.snapshot_of(endpoint, ENDPOINT_FIELDS)
        session.delete(endpoint)
        audit.record(
            session,
            actor=actor,
            action="deleted",
            entity_type="webhook_endpoint",
            entity_id=endpoint_id,
            before=before,
        )


@retrying
def rotate_secret(
    session: Session,
    *,
    endpoint_id: str,
    actor: str,
    overlap_seconds: int | None = None,
) -> EndpointWithSecret:
    """Give the endpoint a new signing secret, returned here and never again (audited). The
    old one goes on signing beside it for ``overlap_seconds`` (default 24 hours, 0 to stop at
    once), so receivers can switch without missing a message; a secret still overlapping from
    an earlier rotation stops now. Raises `WebhookEndpointNotFoundError`."""
    overlap = DEFAULT_OVERLAP if overlap_seconds is None else dt.timedelta(seconds=overlap_seconds)
    if not dt.timedelta(0) <= overlap <= MAX_OVERLAP:
        raise InvalidFieldError("overlap_seconds", "Must be between 0 and 7 days.")
    with unit_of_work(session):
        endpoint = _lock_endpoint(session, endpoint_id)
        now = clock.now()
        secret = rules.new_secret()
        if overlap:
            endpoint.previous_secret = endpoint.secret
            endpoint.previous_secret_expires_at = now + overlap
        else:
            endpoint.previous_secret = None
            endpoint.previous_secret_expires_at = None
        endpoint.secret = seal(secret, purpose=SECRET_PURPOSE)
        endpoint.updated_at = now
        audit.record(
            session,
            actor=actor,
            action="secret_rotated",
            entity_type="webhook_endpoint",
            entity_id=endpoint.id,
            after={"previous_secret_expires_at": endpoint.previous_secret_expires_at},
        )
        return EndpointWithSecret(endpoint, secret)


def list_attempts(
    session: Session, endpoint_id: str, *, limit: int = 50, cursor: str | None = None
) -> Page[WebhookAttempt]:
    """The endpoint's delivery log, newest attempt first, a page at a time. Raises
    `WebhookEndpointNotFoundError`."""
    get_endpoint(session, endpoint_id)
    query = (
        select(WebhookAttempt)
        .where(WebhookAttempt.endpoint_id == endpoint_id)
        .order_by(WebhookAttempt.id.desc())
    )
    return keyset_page(
        session, query, WebhookAttempt.id, limit, cursor, newest_first=True, numeric=True
    )


@retrying
def replay(
    session: Session,
    *,
    endpoint_id: str,
    actor: str,
    event_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> int:
    """Queue events again for one endpoint, as new deliveries with fresh retries (audited):
    the event ``event_id`` (whatever its type), or the events the endpoint subscribes to that
    were recorded from ``since`` up to (not including) ``until`` (default: no end).
    Receivers see the same ``webhook-id`` again. Returns how many were queued. Raises
    `WebhookEndpointNotFoundError`, `OutboxEventNotFoundError`,
    `WebhookEndpointDisabledError`, `InvalidFieldError`."""
    if (event_id is None) == (since is None):
        raise InvalidFieldError("event_id", "Give either event_id, or since (and until).")
    if event_id is not None and until is not None:
        raise InvalidFieldError("until", "until goes with since, not with event_id.")
    with unit_of_work(session):
        endpoint = _lock_endpoint(session, endpoint_id)
        if not endpoint.enabled:
            raise WebhookEndpointDisabledError(endpoint_id)
        now = clock.now()
        events = select(OutboxEvent.seq).order_by(OutboxEvent.seq)
        if event_id is not None:
            if session.scalar(select(OutboxEvent.seq).where(OutboxEvent.id == event_id)) is None:
                raise OutboxEventNotFoundError(event_id)
            events = events.where(OutboxEvent.id == event_id)
        else:
            assert since is not None
            events = events.where(
                OutboxEvent.created_at >= since,
                OutboxEvent.type.in_(rules.matching_types(endpoint.event_types)),
            )
            if until is not None:
                if until <= since:
                    raise InvalidFieldError("until", "Must be after since.")
                events = events.where(OutboxEvent.created_at < until)
        constants: list[Label[Any]] = [
            literal(endpoint_id, String()).label("endpoint_id"),
            literal("pending", String()).label("status"),
            literal(0, Integer()).label("attempts"),
            literal(now, UTCDateTime()).label("next_attempt_at"),
            literal(True, Boolean()).label("replay"),
            literal(now, UTCDateTime()).label("created_at"),
        ]
        queued = len(
            session.execute(
                insert(WebhookDelivery)
                .from_select(
                    ["event_seq", *(c.name for c in constants)], events.add_columns(*constants)
                )
                .returning(WebhookDelivery.id)
            ).all()
        )
        audit.record(
            session,
            actor=actor,
            action="replayed",
            entity_type="webhook_endpoint",
            entity_id=endpoint_id,
            after={"event_id": event_id, "since": since, "until": until, "queued": queued},
        )
        return queued


# --- lifecycle triggers' settings ------------------------------------------------------------


def get_lifecycle_settings(session: Session) -> LifecycleSettings:
    """Which lifecycle triggers are on, and their windows (the migration's defaults until a
    manager changes them: all on, 30 days' notice of expiry, 90 days to inactivity)."""
    return settings_row(session, LifecycleSettings)


@retrying
def update_lifecycle_settings(
    session: Session, *, changes: dict[str, Any], actor: str
) -> LifecycleSettings:
    """Switch lifecycle triggers on or off and change their windows (audited); fields absent
    from ``changes`` stay as they are. A trigger switched off skips what happens meanwhile
    (switched on again, it goes on from then). Locks the settings row. Raises
    `InvalidFieldError` for a window out of range."""
    for name, (least, most) in _LIFECYCLE_RANGES.items():
        value = changes.get(name)
        if value is not None and not least <= value <= most:
            raise InvalidFieldError(name, f"Must be between {least} and {most}.")
    with unit_of_work(session):
        settings = settings_row(session, LifecycleSettings, lock=True)
        with audit.recorded_update(
            session,
            settings,
            LIFECYCLE_FIELDS,
            actor=actor,
            entity_type="lifecycle_settings",
            entity_id="lifecycle",
        ):
            audit.apply_changes(
                settings, {k: v for k, v in changes.items() if v is not None}, LIFECYCLE_FIELDS
            )
        return settings
