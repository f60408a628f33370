"""Community test helpers: a controllable clock, factories for members, event types, rules
and badges, and the ledger's invariants checked after every test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.community import service
from loyalty.community.models import Badge, EventRule, EventType
from loyalty.ledger import service as ledger
from loyalty.members import service as members_service
from tests.support import START, _invariants_hold, clock

DAY = dt.timedelta(days=1)
_counter = iter(range(1, 10**9))


def make_member(session: Session, **kwargs: Any) -> str:
    member, _ = members_service.enroll_member(
        session, external_id=f"community-{next(_counter)}", **kwargs
    )
    return member.id


def make_type(session: Session, name: str = "review.posted", **properties: Any) -> EventType:
    return service.create_event_type(
        session,
        name=name,
        properties={
            key: {"type": kind, "required": True} if isinstance(kind, str) else kind
            for key, kind in properties.items()
        },
        actor="test",
    )


def make_rule(session: Session, event_type: str = "review.posted", **values: Any) -> EventRule:
    values = {"points": 10, **values}
    return service.create_event_rule(session, event_type=event_type, actor="test", **values)


def make_badge(session: Session, **values: Any) -> Badge:
    values = {
        "name": "Reviewer",
        "rule": "event_count",
        "event_type": "review.posted",
        "levels": [{"name": "bronze", "threshold": 1, "bonus_points": 5}],
        **values,
    }
    return service.create_badge(session, actor="test", **values)


def post_event(
    session: Session,
    member_id: str,
    event_id: str,
    type_: str = "review.posted",
    *,
    at: dt.datetime | None = None,
    client_id: str = "cli_test",
    channel_id: str = "chn_default",
    **properties: Any,
) -> dict[str, Any]:
    result = service.record_event(
        session,
        channel_id=channel_id,
        client_id=client_id,
        event_id=event_id,
        member_id=member_id,
        type=type_,
        occurred_at=at or START,
        properties=properties,
        actor="test",
    )
    return result.body


def available(session: Session, member_id: str) -> int:
    return ledger.get_balance(session, member_id).available


@pytest.fixture
def member(session: Session, clock: FrozenClock) -> Callable[..., str]:
    def make(**kwargs: Any) -> str:
        return make_member(session, **kwargs)

    return make


__all__ = ["START", "_invariants_hold", "clock"]
