"""A campaign's holdout: held-out members earn no campaign points; the uplift report compares
them with the treated members over the campaign's window."""

from __future__ import annotations

import math

from sqlalchemy.orm import Session

from loyalty.analytics import rules, service
from loyalty.clock import FrozenClock
from loyalty.earning import service as earning
from loyalty.earning.rules import in_holdout
from loyalty.ledger import service as ledger
from tests.analytics.conftest import DAY, NOW, enrol


def test_held_out_members_earn_no_campaign_points_and_uplift_compares_them(
    session: Session, now: FrozenClock
) -> None:
    campaign = earning.create_campaign(
        session,
        actor="test",
        name="Double week",
        starts_at=NOW - 10 * DAY,
        ends_at=NOW + 20 * DAY,
        multiplier="2",
        holdout_pct=50,
    )
    members = [enrol(session, f"u-{i}", NOW - 60 * DAY) for i in range(40)]
    held = [m for m in members if in_holdout(campaign.id, m, 50)]
    treated = [m for m in members if m not in held]
    assert held and treated
    spend: dict[str, int] = {}
    for index, member in enumerate(members):
        # Every treated member buys for 20.00; every other held-out member for 10.00.
        total = 2000 if member in treated else (1000 if index % 2 == 0 else 0)
        if total:
            result = ledger.accrue_order(
                session,
                order_id=f"U-{index}",
                member_id=member,
                total=total,
                currency="USD",
                placed_at=NOW - DAY,
            )
            # 20 base + 20 campaign for the treated, the base alone for the held out.
            assert result.body["points"] == (40 if member in treated else 10)
            spend[member] = total
    report = service.uplift(session, campaign_id=campaign.id)
    buyers_held = sum(1 for m in held if m in spend)
    assert report["treated"] == {
        "members": len(treated),
        "buyers": len(treated),
        "purchase_rate": 1.0,
        "revenue": 2000 * len(treated),
        "spend_per_member": 2000.0,
        "points": 20 * len(treated),
    }
    assert report["held_out"]["buyers"] == buyers_held
    assert report["held_out"]["points"] == 0
    p2 = buyers_held / len(held)
    half = rules.Z_95 * math.sqrt(p2 * (1 - p2) / len(held))
    assert report["purchase_rate_uplift"] == {
        "difference": round(1 - p2, 4),
        "low": round(1 - p2 - half, 4),
        "high": round(1 - p2 + half, 4),
        "confidence": 0.95,
    }
    mean_held = 1000 * buyers_held / len(held)
    assert report["spend_per_member_uplift"]["difference"] == round(2000 - mean_held, 4)
    incremental = round((2000 - mean_held) * len(treated), 2)
    assert report["incremental_revenue"] == incremental
    # 20 points x 0.01 USD = 0.20 USD = 20 cents per treated member.
    assert report["points_cost"] == 20.0 * len(treated)
    assert report["return_on_cost"] == round(incremental / (20.0 * len(treated)), 4)


def test_a_campaign_without_holdout_has_no_comparison(session: Session, now: FrozenClock) -> None:
    campaign = earning.create_campaign(
        session, actor="test", name="All in", starts_at=NOW - DAY, ends_at=NOW + DAY, bonus_points=5
    )
    enrol(session, "solo", NOW - 30 * DAY)
    report = service.uplift(session, campaign_id=campaign.id)
    assert report["held_out"]["members"] == 0
    assert report["purchase_rate_uplift"] is None and report["return_on_cost"] is None
