"""Shared checks for the review probes."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from flask import Flask
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import get_database
from loyalty.earning import service
from loyalty.earning.models import Campaign
from loyalty.ledger import service as ledger_service
from loyalty.ledger.invariants import verify
from loyalty.ledger.models import Order
from loyalty.members import service as members_service
from tests.ledger.conftest import CLIENT


def campaign(
    session: Session,
    clock: FrozenClock,
    name: str,
    *,
    budget: int | None,
    multiplier: int | None = 2,
    bonus: int | None = None,
) -> str:
    return service.create_campaign(
        session,
        actor="manager",
        name=name,
        starts_at=clock.now() - dt.timedelta(days=1),
        ends_at=clock.now() + dt.timedelta(days=1),
        multiplier=Decimal(multiplier) if multiplier else None,
        bonus_points=bonus,
        budget=budget,
    ).id


def members(app: Flask, prefix: str, count: int) -> list[str]:
    session = get_database(app).sessionmaker()
    try:
        return [
            members_service.enroll_member(session, external_id=f"{prefix}-{i}")[0].id
            for i in range(count)
        ]
    finally:
        session.close()


def accrue(session: Session, member_id: str, order_id: str, total: int = 10000) -> int:
    body = ledger_service.accrue_order(
        session,
        client_id=CLIENT,
        order_id=order_id,
        member_id=member_id,
        total=total,
        currency="USD",
    ).body
    return int(body["points"])


def given_by_orders(session: Session) -> dict[str, int]:
    given: dict[str, int] = {}
    for breakdown in session.scalars(select(Order.breakdown)):
        for part in breakdown:
            rule = str(part["rule"])
            if rule.startswith("campaign:"):
                key = rule.removeprefix("campaign:")
                given[key] = given.get(key, 0) + int(part["points"])
    return given


def assert_exact(app: Flask, campaign_ids: list[str]) -> dict[str, tuple[int, int | None]]:
    """spent <= budget and spent == what the committed orders' breakdowns gave."""
    session = get_database(app).sessionmaker()
    try:
        given = given_by_orders(session)
        seen = {}
        for campaign_id in campaign_ids:
            row = session.get(Campaign, campaign_id)
            assert row is not None
            seen[campaign_id] = (row.spent, row.budget)
            if row.budget is None:
                continue  # an unbudgeted campaign's spend is not kept
            assert row.spent <= row.budget, (campaign_id, row.spent, row.budget)
            assert row.spent == given.get(campaign_id, 0), (campaign_id, row.spent, given)
        assert verify(session) == []
        return seen
    finally:
        session.close()


def changer(campaign_id: str, changes: dict[str, Any]) -> Callable[[Session], Any]:
    def run(session: Session) -> Any:
        return service.update_campaign(
            session, campaign_id=campaign_id, changes=changes, actor="manager"
        )

    return run


def stopped_at(session: Session, marker: str) -> tuple[threading.Event, threading.Event]:
    """Stop ``session``'s next statement containing ``marker`` before it is sent, until the
    second event is set (the first is set once it is there)."""
    there, go = threading.Event(), threading.Event()

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if marker in statement and not there.is_set():
            there.set()
            assert go.wait(30)

    event.listen(session.get_bind(), "before_cursor_execute", before)
    return there, go
