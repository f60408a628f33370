"""Referral caps and qualification on real PostgreSQL connections and threads."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.ledger import service as ledger
from loyalty.referrals import service
from loyalty.referrals.models import Referral
from tests.referrals.conftest import WINDOW, make_member, place_order, terms
from tests.support import race

pytestmark = pytest.mark.concurrency


def test_the_monthly_cap_holds_when_five_referees_qualify_at_once(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    terms(session, referrer_points=500, referee_points=200, monthly_cap=2)
    ann = make_member(session)
    referees = [make_member(session, referrer=ann) for _ in range(5)]
    for referee in referees:
        place_order(session, referee.id, 6000)
    wallets = [ledger.points_summaries(session, [r.id])[r.id].id for r in referees]
    clock.advance(WINDOW)
    results = race(app, 5, lambda i, s: ledger.settle_wallet(s, wallet_id=wallets[i]))
    assert all(isinstance(r, int) for r in results), results
    check = new_session()
    outcomes = sorted(
        str(outcome)
        for outcome in check.scalars(
            select(Referral.referrer_outcome).where(Referral.referrer_id == ann.id)
        )
    )
    assert outcomes == ["monthly_cap"] * 3 + ["rewarded"] * 2
    assert ledger.get_balance(check, ann.id).available == 1000
    assert {ledger.get_balance(check, r.id).available for r in referees} == {260}
    assert service.qualified_referrals(check, ann.id) == 5


def test_concurrent_enrolments_respect_the_velocity_limit(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    terms(session, velocity_limit=3)
    ann = make_member(session)
    code = ann.referral_code
    from loyalty.members import service as members_service

    results = race(
        app,
        8,
        lambda i, s: (
            members_service.enroll_member(s, external_id=f"race-{i}", referral_code=code)[0].id
        ),
    )
    assert all(isinstance(r, str) for r in results), results
    check = new_session()
    statuses = dict(
        check.execute(
            select(Referral.status, func.count())
            .where(Referral.referrer_id == ann.id)
            .group_by(Referral.status)
        ).all()
    )
    assert statuses == {"pending": 3, "held": 5}
