"""Reconciliation: Stripe's event log for a period, with every event the webhook missed
applied now, as the webhook would have."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy.orm import Session

from loyalty.billing import gateway
from loyalty.billing.service.events import receive_event, recorded_ids


@dataclass
class ReconcileReport:
    """What a reconciliation saw and did: ``fixed`` lists the events it applied."""

    seen: int = 0
    already: int = 0
    fixed: list[tuple[str, str, str]] = field(default_factory=list)  # (id, type, status)
    statuses: Counter[str] = field(default_factory=Counter)


def stripe_events(since: dt.datetime, until: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Stripe's events created from ``since`` (to ``until``), oldest first, as plain data.
    Raises `StripeNotConfiguredError`, `StripeUnavailableError`."""
    client = gateway.client()
    created: dict[str, int] = {"gte": int(since.timestamp())}
    if until is not None:
        created["lt"] = int(until.timestamp())

    def every_page() -> list[Any]:
        listing = client.v1.events.list(params=cast(Any, {"created": created, "limit": 100}))
        return [gateway.plain(event) for event in listing.auto_paging_iter()]

    events = [gateway.check_event(event) for event in gateway.call("events.list", every_page)]
    return sorted(events, key=lambda event: (event["created"], event["id"]))


def reconcile(
    session: Session,
    events: list[dict[str, Any]],
    *,
    progress: Callable[[int], None] | None = None,
) -> ReconcileReport:
    """Apply each of ``events`` not recorded yet, oldest first, each in its own transaction
    (as the webhook would); events recorded already are left alone, so it is safe to run at
    any time and as often as wanted."""
    report = ReconcileReport(seen=len(events))
    known = recorded_ids(session, [event["id"] for event in events])
    session.rollback()
    for event in events:
        if event["id"] in known:
            report.already += 1
        else:
            received = receive_event(session, event=event, source="reconcile")
            if received.replayed:  # the webhook got there meanwhile
                report.already += 1
            else:
                report.fixed.append((received.event_id, received.type, received.status))
                report.statuses[received.status] += 1
        if progress is not None:
            progress(1)
    return report
