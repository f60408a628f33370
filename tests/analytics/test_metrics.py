"""Every metric on the small fixed dataset of `conftest.build`, against figures computed by
hand (README, "Analytics", has the definitions)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from loyalty.analytics import service
from loyalty.clock import FrozenClock
from loyalty.tiers import service as tiers
from tests.analytics.conftest import DAY, NOW, at, build, event, order

FROM_2024 = dt.date(2024, 1, 1)


def marks(cohort: Any) -> dict[str, tuple[int, int, float | None, str]]:
    return {m["mark"]: (m["eligible"], m["retained"], m["rate"], m["status"]) for m in cohort.marks}


def test_cohort_retention_by_hand(session: Session, now: FrozenClock) -> None:
    build(session)
    result = service.cohort_retention(session, first=FROM_2024, months=7)
    cohorts = {c.cohort: c for c in result.cohorts}
    # C joined at 23:30 UTC on 31 January, 08:30 on 1 February in Tokyo: a February member.
    assert {name: c.members for name, c in cohorts.items()} == {
        "2024-02": 1,
        "2026-01": 2,
        "2026-02": 1,
        "2026-06": 1,
    }
    # January: A active on days 1, 5, 26 and 111; B's only order was refunded in full (not
    # activity), B's check-in fell on day 40. Both are 156 days and 146 days old: not a year.
    assert marks(cohorts["2026-01"]) == {
        "day_1": (2, 1, 0.5, "complete"),
        "day_7": (2, 1, 0.5, "complete"),
        "day_30": (2, 1, 0.5, "complete"),
        "day_90": (2, 1, 0.5, "complete"),
        "year_1": (0, 0, None, "not_yet"),
        "year_3": (0, 0, None, "not_yet"),
        "year_5": (0, 0, None, "not_yet"),
    }
    # C's orders fell on local days 0 and 2 (01:00 on 3 February in Tokyo).
    assert marks(cohorts["2026-02"])["day_1"] == (1, 0, 0.0, "complete")
    assert marks(cohorts["2026-02"])["day_7"] == (1, 1, 1.0, "complete")
    # D joined on 29 February 2024; 28 February 2025 is day 365, the last of year 1.
    assert marks(cohorts["2024-02"])["year_1"] == (1, 1, 1.0, "complete")
    assert marks(cohorts["2024-02"])["year_3"] == (0, 0, None, "not_yet")
    # E is 14 days old: day 7 is measured (an order on day 3), day 30 is not yet, not 0%.
    assert marks(cohorts["2026-06"])["day_7"] == (1, 1, 1.0, "complete")
    assert marks(cohorts["2026-06"])["day_30"] == (0, 0, None, "not_yet")
    # The monthly matrix: January's members active in January, February, March (B), May (A);
    # June is under way, July has not begun.
    january = [(m["offset"], m["active"], m["rate"]) for m in cohorts["2026-01"].months]
    assert january == [
        (0, 1, 0.5),
        (1, 1, 0.5),
        (2, 1, 0.5),
        (3, 0, 0.0),
        (4, 1, 0.5),
        (5, 0, 0.0),
        (6, None, None),
    ]
    assert [m["active"] for m in cohorts["2026-02"].months][4:] == [0, None, None]


def test_cohort_filters_and_first_order_cohorts(session: Session, now: FrozenClock) -> None:
    data = build(session)
    referred = service.cohort_retention(session, first=FROM_2024, acquisition="referred")
    assert [(c.cohort, c.members) for c in referred.cohorts] == [("2026-01", 1)]
    assert marks(referred.cohorts[0])["day_90"] == (1, 1, 1.0, "complete")
    direct = service.cohort_retention(session, first=FROM_2024, acquisition="direct")
    assert sum(c.members for c in direct.cohorts) == 4
    # By first order: B (refunded in full) has none; C's first order is local 1 February.
    by_order = service.cohort_retention(session, first=FROM_2024, basis="first_order")
    assert [(c.cohort, c.members) for c in by_order.cohorts] == [
        ("2025-02", 1),
        ("2026-01", 1),
        ("2026-02", 1),
        ("2026-06", 1),
    ]
    # A's first order is day 0 of that cohort: A's next orders were 4 and 25 days later.
    assert marks(by_order.cohorts[1])["day_7"] == (1, 1, 1.0, "complete")
    assert marks(by_order.cohorts[1])["day_1"] == (1, 0, 0.0, "complete")
    # An empty selection is an empty list, not an error.
    assert service.cohort_retention(session, first=FROM_2024, channel="chn_none").cohorts == []
    assert data.a


def test_tier_at_joining_filter(session: Session, now: FrozenClock) -> None:
    tiers.create_tier(
        session, code="base", name="Base", rank=1, threshold=0, points_multiplier="1", actor="t"
    )
    build(session)
    everyone = service.cohort_retention(session, first=FROM_2024, tier="base")
    assert sum(c.members for c in everyone.cohorts) == 5
    assert service.cohort_retention(session, first=FROM_2024, tier="gold").cohorts == []


def test_repurchase_by_hand(session: Session, now: FrozenClock) -> None:
    build(session)
    result = service.repurchase(session, first=dt.date(2026, 1, 1))
    # Counted orders in 2026: A 1000+2000+3000+4000, C 5000+(7000-1000 refunded), E 2000.
    assert result["buyers"] == 3
    assert result["repeat_buyers"] == 2
    assert result["repurchase_rate"] == 0.6667
    assert result["orders"] == 7
    assert result["repurchase_frequency"] == 2.3333
    assert result["revenue"] == 23000
    # Orders after each member's first: A's 2000+3000+4000 and C's 6000.
    assert result["repeat_revenue"] == 15000
    assert result["repeat_revenue_share"] == 0.6522
    assert result["average_order_value"] == 3285.71
    assert result["repeat_buyers_average_order_value"] == 3500.0
    # First orders in 2026 (A, C, E): only C ordered again within 72 hours (39 hours later).
    assert result["repurchase_72_hours"] == {
        "first_buyers": 3,
        "eligible": 3,
        "repurchased": 1,
        "rate": 0.3333,
    }
    # None of them is a year past the first order yet.
    assert result["repurchase_annual"]["eligible"] == 0
    assert result["repurchase_annual"]["rate"] is None
    # Another currency: no money, the same buyers.
    euros = service.repurchase(session, first=dt.date(2026, 1, 1), currency="EUR")
    assert (euros["buyers"], euros["revenue"], euros["average_order_value"]) == (3, 0, None)


def test_lifetime_value_by_hand(session: Session, now: FrozenClock) -> None:
    build(session)
    result = service.lifetime_value(session, first=dt.date(2026, 1, 1))
    # Five members, 24000 of counted orders (D's 1000 in 2025 included).
    assert (result["members"], result["revenue"], result["revenue_per_member"]) == (
        5,
        24000,
        4800.0,
    )
    assert result["cohorts"] == [
        {
            "cohort": "2026-01",
            "members": 2,
            "orders": 4,
            "revenue": 10000,
            "revenue_per_member": 5000.0,
        },
        {
            "cohort": "2026-02",
            "members": 1,
            "orders": 2,
            "revenue": 11000,
            "revenue_per_member": 11000.0,
        },
        {
            "cohort": "2026-06",
            "members": 1,
            "orders": 1,
            "revenue": 2000,
            "revenue_per_member": 2000.0,
        },
    ]
    # The last 12 months: 7 orders by 3 buyers worth 23000; of the year before's buyers (D),
    # nobody bought again: 1 year expected. 3285.71 x 2.3333 x 1.
    assert result["estimate"] == {
        "average_order_value": 3285.71,
        "orders_per_buyer_per_year": 2.3333,
        "annual_buyer_retention": 0.0,
        "expected_years": 1.0,
        "lifetime_value": 7666.55,
    }


def test_lifetime_value_retention_of_last_years_buyers(session: Session, now: FrozenClock) -> None:
    data = build(session)
    # D bought last year (28 February 2025) and again in March: 1 of 1 stayed, 10 years (the
    # most); this year 8 orders by 4 buyers, 23000 + 500.
    order(session, data.d, "D-2", 500, at(2026, 3, 1))
    estimate = service.lifetime_value(session, first=dt.date(2026, 1, 1))["estimate"]
    assert estimate == {
        "average_order_value": 2937.5,
        "orders_per_buyer_per_year": 2.0,
        "annual_buyer_retention": 1.0,
        "expected_years": 10,
        "lifetime_value": 58750.0,
    }


def test_kpis_and_liability_by_hand(session: Session, now: FrozenClock) -> None:
    build(session)
    result = service.kpis(session, first=dt.date(2026, 1, 1))
    assert (result["members"], result["new_members"], result["active_members"]) == (5, 4, 4)
    points = {name: value["points"] for name, value in result["points"].items()}
    # Issued 10+20+30+40 (A) + 15 (B) + 50+70 (C) + 20 (E); taken back 15 (B) + 10 (C's
    # refund of 1000 of 7000: 10 of its 70 points); D's 10 were issued in 2025.
    assert points == {
        "issued": 265,
        "reversed": 25,
        "redeemed": 0,
        "expired": 0,
        "adjusted": 0,
        "outstanding": 240,
    }
    assert result["points"]["outstanding"]["money"] == {"amount": "2.40", "currency": "USD"}
    assert result["redemption_rate"] == 0.0
    assert result["breakage_rate"] is None  # nothing redeemed or expired: nothing to break
    assert result["referrals"] == {"referrals": 1, "qualified": 0, "conversion_rate": 0.0}
    liability = service.liability(session)
    # E's order of 4 June is pending until 18 June; the rest are active.
    assert (liability["outstanding"]["points"], liability["pending"]["points"]) == (240, 20)
    assert liability["available"]["money"] == {"amount": "2.20", "currency": "USD"}
    # Rolling 36 months: nothing expires in the next 12.
    assert sum(m["points"] for m in liability["expiring"]) == 0


def test_nps_by_hand(session: Session, now: FrozenClock) -> None:
    data = build(session)
    event(session, data.a, "nps-a-1", "nps.responded", NOW - 20 * DAY, score=5)
    event(session, data.a, "nps-a-2", "nps.responded", NOW - 5 * DAY, score=10, comment="Great")
    event(session, data.c, "nps-c", "nps.responded", NOW - 4 * DAY, score=9)
    event(session, data.e, "nps-e", "nps.responded", NOW - 3 * DAY, score=3)
    result = service.nps(session)
    # A's latest answer counts: promoters A and C, detractor E: (2 - 1) / 3.
    assert (result["responses"], result["promoters"], result["detractors"]) == (3, 2, 1)
    assert result["nps"] == 33.3
    assert [(g["key"], g["nps"]) for g in result["by_cohort"]] == [
        ("2026-01", 100.0),
        ("2026-02", 100.0),
        ("2026-06", -100.0),
    ]
    assert [(g["key"], g["responses"]) for g in result["by_month"]] == [("2026-06", 3)]
    # An earlier period sees A's first answer only.
    before = service.nps(session, first=dt.date(2026, 5, 1), last=dt.date(2026, 5, 31))
    assert (before["responses"], before["nps"]) == (1, -100.0)


def test_segments_after_the_workers_pass(session: Session, now: FrozenClock) -> None:
    data = build(session)
    counts = service.run_due(session)
    assert counts["stages computed"] == 5
    result = service.segments(session)
    stages = {s["stage"]: s["members"] for s in result["stages"]}
    # A last active 1 May (45 days): active. B (1 March) and C (2 February): silent.
    # D (28 February 2025): churned. E (joined 1 June): new.
    assert stages == {"new": 1, "active": 1, "silent": 2, "churned": 1}
    member = service.member_analytics(session, data.d)
    assert (member["stage"], member["segment"]) == ("churned", "lost")
    member = service.member_analytics(session, data.b)
    assert member["segment"] is None  # no counted order
    assert member["history"][0]["to_stage"] == "silent"
    # A second pass the same day does nothing; the next day's changes nothing new.
    assert service.run_due(session)["stages computed"] == 0
