"""The embedded default: claims, cancellation and the due work on SQLite, and the rewards
counts in ``loyalty jobs run``."""

from __future__ import annotations

import datetime as dt

from flask import Flask
from sqlalchemy.orm import Session

from loyalty import jobs
from loyalty.clock import FrozenClock, use_clock
from loyalty.db import get_database
from loyalty.ledger import service as ledger
from loyalty.rewards import service
from tests.rewards.conftest import DAY, START, make_member, make_perk, make_reward, make_tiers


def test_claims_and_birthday_gifts_on_sqlite(sqlite_app: Flask) -> None:
    clock = FrozenClock(START)
    use_clock(sqlite_app, clock)
    with sqlite_app.app_context():
        session = get_database(sqlite_app).sessionmaker()
        make_tiers(session)
        make_perk(session, kind="birthday_gift", bonus_points=25, tier_codes=["silver"])
        member_id = make_member(session, points=300, birthday=dt.date(1990, 3, 3))
        reward = make_reward(session, points_cost=200, stock=1, coupon_valid_days=3)
        claim = service.claim_reward(session, member_id=member_id, reward_id=reward.id).claim
        assert service.get_reward(session, reward.id).stock == 0
        cancelled = service.cancel_claim(session, claim_id=claim.id)
        assert (cancelled.points_returned, cancelled.balance.available) == (200, 300)
        again = service.claim_reward(session, member_id=member_id, reward_id=reward.id).claim
        assert service.run_due(session) == {"birthday gifts": 1, "claims expired": 0}
        assert service.run_due(session) == {"birthday gifts": 0, "claims expired": 0}
        clock.advance(3 * DAY)
        assert service.run_due(session) == {"birthday gifts": 0, "claims expired": 1}
        assert service.get_claim(session, again.id).status == "expired"
        assert ledger.get_balance(session, member_id).available == 125
        session.close()


def test_jobs_run_reports_the_rewards_work(session: Session, clock: FrozenClock) -> None:
    make_tiers(session)
    make_perk(session, kind="birthday_gift", bonus_points=25, tier_codes=["silver"])
    member_id = make_member(session, points=100, birthday=dt.date(1990, 3, 3))
    make_member(session, birthday=dt.date(1990, 3, 4))
    reward = make_reward(session, coupon_valid_days=1)
    service.claim_reward(session, member_id=member_id, reward_id=reward.id)
    clock.advance(DAY)
    report = jobs.run_due(session)
    assert report.counts["birthday gifts"] == 2
    assert report.counts["claims expired"] == 1
    assert "birthday gifts: 2" in report.summary()
