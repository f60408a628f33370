"""Pure referral rules: abuse decisions, caps, qualification, links and display names."""

from __future__ import annotations

import datetime as dt

import pytest

from loyalty.referrals import rules
from loyalty.referrals.rules import Decision, Party


def party(member_id: str = "a", email: str | None = None, **metadata: str) -> Party:
    return Party(member_id=member_id, email=email, metadata=metadata)


def decide(referrer: Party, referee: Party, **kw: object) -> Decision:
    options: dict[str, object] = {"loop": False, "recent": 0, "velocity_limit": None, **kw}
    return rules.attribution(referrer, referee, **options)  # type: ignore[arg-type]


def test_a_clean_referral_is_pending() -> None:
    assert decide(party("a", "ann@x.com"), party("b", "bob@x.com")) == Decision("pending")


@pytest.mark.parametrize(
    ("referrer", "referee", "reason"),
    [
        (party("a"), party("a"), "self_referral"),
        (party("a", "Ann@X.com"), party("b", "ann@x.com"), "same_email"),
        (party("a", "ann@x.com"), party("b", "ann+promo@x.com"), "same_email"),
        (
            party("a", payment_card_hash="h1"),
            party("b", payment_card_hash="h1"),
            "same_payment_card",
        ),
        (party("a", device_id="d1"), party("b", device_id="d1"), "same_device"),
    ],
)
def test_self_referrals_are_rejected(referrer: Party, referee: Party, reason: str) -> None:
    assert decide(referrer, referee) == Decision("rejected", reason)


def test_different_or_missing_fingerprints_are_fine() -> None:
    assert decide(party("a", device_id="d1"), party("b", device_id="d2")).status == "pending"
    assert decide(party("a", device_id=""), party("b", device_id="")).status == "pending"
    assert decide(party("a"), party("b", payment_card_hash="h")).status == "pending"


def test_a_loop_is_rejected() -> None:
    assert decide(party("a"), party("b"), loop=True) == Decision("rejected", "loop")


def test_velocity_over_the_limit_is_held_and_abuse_wins_over_velocity() -> None:
    assert decide(party("a"), party("b"), recent=2, velocity_limit=3).status == "pending"
    assert decide(party("a"), party("b"), recent=3, velocity_limit=3) == Decision(
        "held", "velocity"
    )
    same = decide(party("a", "x@y.z"), party("b", "x@y.z"), recent=9, velocity_limit=1)
    assert same == Decision("rejected", "same_email")


@pytest.mark.parametrize(
    ("monthly", "total", "this_month", "overall", "outcome"),
    [
        (None, None, 100, 1000, "rewarded"),
        (2, None, 1, 5, "rewarded"),
        (2, None, 2, 5, "monthly_cap"),
        (None, 3, 0, 3, "total_cap"),
        (2, 3, 2, 3, "total_cap"),
        (0, None, 0, 0, "monthly_cap"),
    ],
)
def test_caps(
    monthly: int | None, total: int | None, this_month: int, overall: int, outcome: str
) -> None:
    assert (
        rules.referrer_outcome(
            monthly_cap=monthly,
            total_cap=total,
            rewarded_this_month=this_month,
            rewarded_total=overall,
        )
        == outcome
    )


def test_month_start_is_utc() -> None:
    moment = dt.datetime(2026, 4, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    assert rules.month_start(moment) == dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def test_qualifying_amounts() -> None:
    assert rules.qualifies(5000, "USD", 5000, "USD")
    assert not rules.qualifies(4999, "USD", 5000, "USD")
    assert not rules.qualifies(9000, "EUR", 5000, "USD")
    assert rules.qualifies(9000, "EUR", 5000, None)
    assert not rules.qualifies(0, "USD", 0, None)  # wholly refunded


def test_link_format() -> None:
    assert rules.link("https://shop.example/r/{code}", "AB12CD") == "https://shop.example/r/AB12CD"
    assert rules.link(None, "AB12CD") is None
    assert rules.link_template_problem("https://shop.example/join?ref={code}") is None
    assert rules.link_template_problem("https://shop.example/join") is not None
    assert rules.link_template_problem("javascript:{code}") is not None


def test_referees_are_shown_by_first_name_or_masked_email() -> None:
    assert rules.display_name("Ann Smith", "ann@x.com") == "Ann"
    assert rules.display_name(None, "ann@x.com") == "a***@x.com"
    assert rules.display_name("  ", None) == "a friend"
