"""Events on real PostgreSQL connections and threads: the same event sent twice at once
counts once, and two events that both cross a badge threshold award the level once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.community import service
from loyalty.community.models import BadgeAward, CommunityEvent
from loyalty.ledger import service as ledger
from tests.community.conftest import START, make_badge, make_member, make_rule, make_type
from tests.support import race

pytestmark = pytest.mark.concurrency


def send(session: Session, member_id: str, event_id: str) -> bool:
    return service.record_event(
        session,
        client_id="cli_test",
        event_id=event_id,
        member_id=member_id,
        type="review.posted",
        occurred_at=START,
        properties={},
    ).created


def test_the_same_event_twice_at_once_counts_once(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    make_type(session)
    make_rule(session, points=10)
    make_badge(session, levels=[{"name": "bronze", "threshold": 1, "bonus_points": 5}])
    member_id = make_member(session)
    results = race(app, 4, lambda i, s: send(s, member_id, "same"))
    assert sorted(results, key=str) == [False, False, False, True], results  # type: ignore[arg-type]
    check = new_session()
    assert check.scalar(select(func.count()).select_from(CommunityEvent)) == 1
    assert check.scalar(select(func.count()).select_from(BadgeAward)) == 1
    assert ledger.get_balance(check, member_id).available == 15


def test_two_events_crossing_a_threshold_at_once_award_the_level_once(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    make_type(session)
    make_badge(session, levels=[{"name": "silver", "threshold": 2, "bonus_points": 20}])
    member_id = make_member(session)
    send(session, member_id, "first")
    results = race(app, 2, lambda i, s: send(s, member_id, f"other-{i}"))
    assert results == [True, True], results
    check = new_session()
    assert check.scalar(select(func.count()).select_from(BadgeAward)) == 1
    assert ledger.get_balance(check, member_id).available == 20
