"""Ledger test helpers: a controllable clock, member factories, and the invariants checked
after every test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete
from sqlalchemy.orm import Session

from loyalty import demo
from loyalty.db import get_database
from loyalty.ledger import service
from loyalty.ledger.models import Wallet
from loyalty.members import service as members_service
from tests.support import START, _invariants_hold, clock

CLIENT = "cli_test"


@pytest.fixture
def member(session: Session) -> Callable[..., str]:
    counter = iter(range(1, 1_000_000))

    def make(**kwargs: Any) -> str:
        created, _ = members_service.enroll_member(
            session, external_id=f"cust-{next(counter)}", **kwargs
        )
        return created.id

    return make


@pytest.fixture
def programme(app: Flask) -> None:
    """The demo's programme: its tiers, earning rules, campaigns, rewards, event rules and
    badges (no members)."""
    with app.app_context():
        session = get_database(app).sessionmaker()
        try:
            demo.seed_programme(session)
            demo.seed_community(session, {})
        finally:
            session.close()


def settings(session: Session, **changes: Any) -> None:
    service.update_settings(session, changes=changes, actor="test")


def order(
    session: Session,
    member_id: str,
    total: int,
    *,
    order_id: str | None = None,
    client_id: str = CLIENT,
    **kwargs: Any,
) -> dict[str, Any]:
    order.counter += 1  # type: ignore[attr-defined]
    result = service.accrue_order(
        session,
        client_id=client_id,
        order_id=order_id or f"o-{order.counter}",  # type: ignore[attr-defined]
        member_id=member_id,
        total=total,
        currency=kwargs.pop("currency", "USD"),
        **kwargs,
    )
    return result.body


order.counter = 0  # type: ignore[attr-defined]


def without_a_wallet(session: Session, member_id: str) -> None:
    """Take the new member's empty wallet away (committed), as for a member enrolled before
    wallets were opened at enrolment: the member's first change creates it."""
    deleted = session.execute(
        delete(Wallet).where(Wallet.member_id == member_id, Wallet.lifetime_earned == 0)
    )
    assert deleted.rowcount == 1
    session.commit()


def balance(session: Session, member_id: str) -> tuple[int, int, int]:
    report = service.get_balance(session, member_id)
    return report.available, report.pending, report.held
