"""Delivering the outbox: fan-out to the endpoints, then signed HTTP POSTs with retries.

`deliver_due` is one pass, run by ``loyalty worker`` when an event is committed and every few
seconds, and by ``loyalty jobs run``:

1. **Fan-out.** Events not yet dispatched are taken oldest first, one worker at a time (an
   advisory lock on PostgreSQL), and one delivery is queued per enabled endpoint whose event
   types match.
2. **Sending.** A worker takes the lease of one endpoint with due deliveries (again skipping
   endpoints another worker holds), reads its due deliveries in the order they were queued,
   commits, then sends them one by one outside any transaction, recording each attempt in a
   short transaction of its own that also renews the lease. So one worker at a time sends to
   an endpoint, first attempts go out in creation order, and every attempt is made once.

Each POST carries the Standard Webhooks headers (``webhook-id``: the event id, which receivers
deduplicate by; ``webhook-timestamp``; ``webhook-signature``, with two signatures while a
rotated secret overlaps). A 2xx answer delivers; anything else is retried on the schedule of
`loyalty.events.rules` for up to 3 days, then the delivery has failed. An endpoint is disabled
when a delivery fails for good and nothing was delivered to it since that delivery's first
attempt (`rules.should_disable`); managers see why in ``disabled_reason``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import uuid
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import and_, delete, exists, func, insert, or_, select, text, update
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.db import among, unit_of_work
from loyalty.events import rules, transport
from loyalty.events.models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from loyalty.events.outbox import envelope
from loyalty.sealing import UnsealError, unseal

log = logging.getLogger(__name__)

SECRET_PURPOSE = "webhook signing secret"
# How long a worker's claim on an endpoint lasts without news (renewed after every attempt;
# well above one attempt's longest time).
LEASE = dt.timedelta(minutes=2)
# The advisory lock key that serialises fan-out on PostgreSQL ("loyalty outbox" as a number).
FAN_OUT_LOCK = 0x6C6F79616C747901
# Fan-out takes this many times a pass's batch size of events per transaction: it holds no
# wallet or endpoint, only the fan-out lock, and a job writes hundreds of thousands at once.
FAN_OUT_FACTOR = 20
# Events (and their delivery log) are kept this long, for replays.
RETENTION = dt.timedelta(days=30)
_random = random.SystemRandom()


@dataclass
class PassReport:
    """What one delivery pass did."""

    events_fanned_out: int = 0
    attempts: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    endpoints_disabled: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Job:
    delivery_id: int
    event_id: str
    event_type: str
    body: bytes


@dataclass(frozen=True)
class _Claim:
    endpoint_id: str
    url: str
    token: str
    secrets: list[str]
    jobs: list[_Job]
    unreadable_secret: bool = False


def deliver_due(session: Session, *, batch_size: int = 50) -> PassReport:
    """Fan out new events, then send every delivery due now, endpoint by endpoint (at most
    ``batch_size`` per endpoint). Safe to run in several processes at once."""
    report = PassReport()
    while fanned := fan_out(session, batch_size=batch_size * FAN_OUT_FACTOR):
        report.events_fanned_out += fanned
    # An endpoint is served again in this pass only while it fills whole batches: each
    # attempt moves its delivery out of the due ones, so the pass ends.
    done: set[str] = set()
    while claim := _claim_endpoint(session, batch_size=batch_size, skip=done):
        try:
            finished = _send_claimed(session, claim, report)
        finally:
            _release(session, claim)
        if not finished or len(claim.jobs) < batch_size:
            done.add(claim.endpoint_id)
    return report


def run_due(session: Session, *, batch_size: int = 50) -> dict[str, int]:
    """The job's share (``loyalty jobs run``): one delivery pass, and the purge of events
    older than `RETENTION`."""
    report = deliver_due(session, batch_size=batch_size)
    return {
        "webhook events fanned out": report.events_fanned_out,
        "webhook attempts": report.attempts,
        "webhook endpoints disabled": len(report.endpoints_disabled),
        "outbox events purged": purge_old_events(session, batch_size=batch_size * 20),
    }


# --- fan-out -------------------------------------------------------------------------------


def fan_out(session: Session, *, batch_size: int = 50) -> int:
    """Queue one delivery per matching enabled endpoint for up to ``batch_size`` events not
    yet dispatched, oldest first; returns how many events were dispatched.

    One worker fans out at a time (a transaction-scoped advisory lock on PostgreSQL; SQLite's
    write lock), so deliveries are queued in the order the events were written and each
    endpoint's first attempts follow that order. Fan-out is one short transaction per batch
    of a few statements, whatever the number of events: only the events' sequence numbers and
    types are read (not their payloads), the deliveries go in with one INSERT."""
    with unit_of_work(session):
        if session.get_bind().dialect.name == "postgresql":
            session.execute(select(func.pg_advisory_xact_lock(FAN_OUT_LOCK)))
            # The oldest undispatched events are the first entries of the partial index, read
            # in order until the batch is full. Where the statistics do not know how many are
            # waiting (none yet, or taken before a job wrote a backlog), the planner expects a
            # few and reads them all with a bitmap scan and a sort instead: every batch would
            # then read the whole backlog (42-54 s for 600,000 events, benchmarks/README.md).
            session.execute(text("SET LOCAL enable_bitmapscan = off"))
        now = clock.now()
        if session.get_bind().dialect.name == "postgresql":
            answer = session.execute(
                _FAN_OUT, {"batch_size": batch_size, "now": now, "wildcard": rules.WILDCARD}
            ).one()
            return int(answer.events)
        events = session.execute(
            select(OutboxEvent.seq, OutboxEvent.type)
            .where(OutboxEvent.dispatched_at.is_(None))
            .order_by(OutboxEvent.seq)
            .limit(batch_size)
        ).all()
        if not events:
            return 0
        # Read after the events: an endpoint enabled (or disabled) before an event was
        # committed is seen so.
        endpoints = session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.event_types)
            .where(WebhookEndpoint.enabled.is_(True))
            .order_by(WebhookEndpoint.id)
        ).all()
        rows = [
            {
                "endpoint_id": endpoint_id,
                "event_seq": seq,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "replay": False,
                "created_at": now,
            }
            for seq, event_type in events
            for endpoint_id, types in endpoints
            if rules.matches(types, event_type)
        ]
        if rows:
            session.execute(insert(WebhookDelivery), rows)
        session.execute(
            update(OutboxEvent)
            .where(among(session, OutboxEvent.seq, [seq for seq, _type in events]))
            .values(dispatched_at=now),
            execution_options={"synchronize_session": False},
        )
        return len(events)


# A batch of the fan-out on PostgreSQL: the next events not yet dispatched, read in the partial
# index's order; one delivery for each enabled endpoint that receives the event's type (its
# filters as `rules.matches` reads them: the wildcard, the type, or the type's family with
# ``.*``), in event order then endpoint order; the events marked dispatched. The endpoints are
# read in the same snapshot as the events (one enabled or disabled before an event was
# committed is seen so), and the events never travel to Python and back.
_FAN_OUT = text(
    """
WITH batch AS (
    SELECT seq, type FROM outbox_events
    WHERE dispatched_at IS NULL ORDER BY seq LIMIT :batch_size
),
queued AS (
    INSERT INTO webhook_deliveries (endpoint_id, event_seq, status, attempts, next_attempt_at,
                                    replay, created_at)
    SELECT endpoint.id, batch.seq, 'pending', 0, :now, false, :now
    FROM batch JOIN webhook_endpoints endpoint ON endpoint.enabled AND EXISTS (
        SELECT FROM jsonb_array_elements_text(endpoint.event_types) AS filters(filter)
        WHERE filters.filter IN (:wildcard, batch.type, split_part(batch.type, '.', 1) || '.*')
    )
    ORDER BY batch.seq, endpoint.id
    RETURNING 1
),
dispatched AS (
    UPDATE outbox_events SET dispatched_at = :now
    FROM batch WHERE outbox_events.seq = batch.seq
    RETURNING 1
)
SELECT (SELECT count(*) FROM dispatched) AS events, (SELECT count(*) FROM queued) AS queued
"""
)


# --- sending -------------------------------------------------------------------------------


def endpoint_secrets(endpoint: WebhookEndpoint, now: dt.datetime) -> list[str]:
    """The secrets that sign now: the current one, and the previous one while it overlaps.
    Raises `UnsealError` when ``SECRET_KEY`` changed since they were sealed."""
    secrets = [unseal(endpoint.secret, purpose=SECRET_PURPOSE)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret is not None and expires is not None and now < expires:
        secrets.append(unseal(endpoint.previous_secret, purpose=SECRET_PURPOSE))
    return secrets


def _claim_endpoint(session: Session, *, batch_size: int, skip: set[str]) -> _Claim | None:
    """Take the lease of an enabled endpoint with due deliveries that no worker holds and
    this pass has not served yet, and read its due deliveries, in queue order."""
    with unit_of_work(session):
        now = clock.now()
        due = exists().where(
            WebhookDelivery.endpoint_id == WebhookEndpoint.id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
        )
        query = (
            select(WebhookEndpoint)
            .where(
                WebhookEndpoint.enabled.is_(True),
                or_(WebhookEndpoint.lease_until.is_(None), WebhookEndpoint.lease_until <= now),
                due,
            )
            .order_by(WebhookEndpoint.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if skip:
            query = query.where(WebhookEndpoint.id.not_in(skip))
        endpoint = session.scalar(query)
        if endpoint is None:
            return None
        token = uuid.uuid4().hex
        endpoint.lease_token = token
        endpoint.lease_until = now + LEASE
        rows = session.execute(
            select(WebhookDelivery.id, OutboxEvent)
            .join(OutboxEvent, OutboxEvent.seq == WebhookDelivery.event_seq)
            .where(
                WebhookDelivery.endpoint_id == endpoint.id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
            )
            .order_by(WebhookDelivery.id)
            .limit(batch_size)
        ).all()
        jobs = [
            _Job(
                delivery_id,
                event.id,
                event.type,
                json.dumps(envelope(event), separators=(",", ":")).encode(),
            )
            for delivery_id, event in rows
        ]
        try:
            secrets = endpoint_secrets(endpoint, now)
            unreadable = False
        except UnsealError:
            secrets, unreadable = [], True
        return _Claim(endpoint.id, endpoint.url, token, secrets, jobs, unreadable)


def _send_claimed(session: Session, claim: _Claim, report: PassReport) -> bool:
    """Send the claimed deliveries in order; False when the worker had to stop early."""
    allow_private = bool(current_app.config["WEBHOOKS_ALLOW_PRIVATE"])
    for job in claim.jobs:
        if claim.unreadable_secret:
            outcome = transport.Outcome(
                None,
                0,
                None,
                "not sent: the signing secret cannot be read (LOYALTY_SECRET_KEY changed?); "
                "rotate the endpoint's secret",
            )
        else:
            timestamp = int(clock.now().timestamp())
            headers = {
                "webhook-id": job.event_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": rules.signature_header(
                    claim.secrets, event_id=job.event_id, timestamp=timestamp, body=job.body
                ),
            }
            outcome = transport.post(claim.url, job.body, headers, allow_private=allow_private)
        report.attempts += 1
        if outcome.succeeded:
            report.delivered += 1
        else:
            report.failed_attempts += 1
        if not _record_attempt(session, claim, job, outcome, report):
            return False
    return True


def _record_attempt(
    session: Session,
    claim: _Claim,
    job: _Job,
    outcome: transport.Outcome,
    report: PassReport,
) -> bool:
    """Log the attempt, move the delivery on (delivered, retry later, or failed), track the
    endpoint's failures (disabling it by the rule) and renew the lease. Returns whether the
    worker may go on sending to this endpoint."""
    with unit_of_work(session):
        now = clock.now()
        endpoint = session.get(WebhookEndpoint, claim.endpoint_id, with_for_update=True)
        delivery = session.get(WebhookDelivery, job.delivery_id, with_for_update=True)
        if endpoint is None or delivery is None:
            return False  # deleted meanwhile: the attempt has nothing left to update
        delivery.attempts += 1
        if delivery.first_attempt_at is None:
            delivery.first_attempt_at = now
        next_at: dt.datetime | None = None
        if outcome.succeeded:
            delivery.status = "delivered"
            delivery.next_attempt_at = None
            endpoint.failing_since = None
        else:
            next_at = rules.next_attempt_at(
                first_attempt_at=delivery.first_attempt_at,
                attempts=delivery.attempts,
                now=now,
                jitter=_random.random(),
            )
            if endpoint.failing_since is None:
                endpoint.failing_since = now
            delivery.next_attempt_at = next_at
            if next_at is None:
                delivery.status = "failed"
                if endpoint.enabled and rules.should_disable(
                    failing_since=endpoint.failing_since,
                    gave_up_first_attempt=delivery.first_attempt_at,
                ):
                    _disable(session, endpoint, now, outcome)
                    report.endpoints_disabled.append(endpoint.id)
        session.add(
            WebhookAttempt(
                delivery_id=delivery.id,
                endpoint_id=endpoint.id,
                event_id=job.event_id,
                event_type=job.event_type,
                attempt=delivery.attempts,
                replay=delivery.replay,
                attempted_at=now,
                status_code=outcome.status_code,
                duration_ms=outcome.duration_ms,
                response_excerpt=outcome.excerpt,
                error=outcome.error[:500] if outcome.error else None,
                next_attempt_at=next_at,
            )
        )
        if endpoint.lease_token != claim.token or not endpoint.enabled:
            return False  # another worker took over, or the endpoint was disabled
        endpoint.lease_until = now + LEASE
        return True


def _disable(
    session: Session, endpoint: WebhookEndpoint, now: dt.datetime, outcome: transport.Outcome
) -> None:
    since = endpoint.failing_since or now
    failures = session.scalar(
        select(func.count())
        .select_from(WebhookAttempt)
        .where(WebhookAttempt.endpoint_id == endpoint.id, WebhookAttempt.attempted_at >= since)
    )
    stamp = since.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    reason = (
        f"Disabled automatically: every delivery attempt failed since {stamp} "
        f"({(failures or 0) + 1} attempts) and a message ran out of retries; last error: "
        f"{outcome.error}. Fix the receiver, set enabled to true, then replay what it missed."
    )
    endpoint.enabled = False
    endpoint.disabled_reason = reason[:500]
    endpoint.updated_at = now
    log.warning("webhook endpoint %s disabled after failing since %s", endpoint.id, stamp)


def _release(session: Session, claim: _Claim) -> None:
    with unit_of_work(session):
        session.execute(
            update(WebhookEndpoint)
            .where(
                WebhookEndpoint.id == claim.endpoint_id,
                WebhookEndpoint.lease_token == claim.token,
            )
            .values(lease_token=None, lease_until=None)
        )


# --- retention -----------------------------------------------------------------------------


def purge_old_events(session: Session, *, batch_size: int = 1000) -> int:
    """Delete dispatched events older than `RETENTION` with nothing pending, and their
    delivery log; returns how many events."""
    purged = 0
    while True:
        with unit_of_work(session):
            cutoff = clock.now() - RETENTION
            pending = exists().where(
                and_(
                    WebhookDelivery.event_seq == OutboxEvent.seq,
                    WebhookDelivery.status == "pending",
                )
            )
            seqs = list(
                session.scalars(
                    select(OutboxEvent.seq)
                    .where(
                        OutboxEvent.created_at < cutoff,
                        OutboxEvent.dispatched_at.is_not(None),
                        ~pending,
                    )
                    .order_by(OutboxEvent.seq)
                    .limit(batch_size)
                    .with_for_update(skip_locked=True)
                )
            )
            if not seqs:
                return purged
            delivery_ids = select(WebhookDelivery.id).where(WebhookDelivery.event_seq.in_(seqs))
            session.execute(
                delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids))
            )
            session.execute(delete(WebhookDelivery).where(WebhookDelivery.event_seq.in_(seqs)))
            session.execute(delete(OutboxEvent).where(OutboxEvent.seq.in_(seqs)))
            purged += len(seqs)
