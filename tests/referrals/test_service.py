"""Referrals on PostgreSQL: attribution and abuse checks, qualification when the first big
enough order activates, rewards within caps, the shared tier, review, clawback and the due
work."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty import bus
from loyalty.audit.models import AuditRecord
from loyalty.clock import FrozenClock
from loyalty.errors import InvalidFieldError, UnknownRewardError
from loyalty.ledger import service as ledger
from loyalty.members.errors import MemberNotFoundError
from loyalty.referrals import service
from loyalty.referrals.errors import ReferralNotFoundError, ReferralNotReviewableError
from loyalty.referrals.events import ReferralQualified
from loyalty.rewards import service as rewards_service
from loyalty.rewards.models import Claim
from loyalty.tiers import service as tiers_service
from tests.referrals.conftest import (
    DAY,
    START,
    WINDOW,
    available,
    make_member,
    place_order,
    referral_of,
    refund,
    settle,
    terms,
)


@pytest.fixture
def rewarding(session: Session, clock: FrozenClock) -> None:
    """Referrer 500 points, referee 200, on a first order of at least 50.00 USD."""
    terms(
        session,
        referrer_points=500,
        referee_points=200,
        min_order_total=5000,
        min_order_currency="USD",
    )


# --- attribution ----------------------------------------------------------------------------


def test_enrolling_with_a_code_attributes_a_pending_referral(
    session: Session, clock: FrozenClock
) -> None:
    ann = make_member(session, name="Ann")
    bob = make_member(session, referrer=ann, name="Bob Jones")
    referral = referral_of(session, bob.id)
    assert (referral.referrer_id, referral.status, referral.reason) == (ann.id, "pending", None)
    assert referral.id.startswith("ref_") and referral.created_at == START
    assert make_member(session).referrer_id is None
    assert service.qualified_referrals(session, ann.id) == 0


@pytest.mark.parametrize(
    ("referrer_kw", "referee_kw", "reason"),
    [
        ({"email": "ann@x.com"}, {"email": "ANN+2@x.com"}, "same_email"),
        ({"metadata": {"device_id": "d1"}}, {"metadata": {"device_id": "d1"}}, "same_device"),
        (
            {"metadata": {"payment_card_hash": "c"}},
            {"metadata": {"payment_card_hash": "c"}},
            "same_payment_card",
        ),
    ],
)
def test_self_referrals_are_rejected_with_the_reason(
    session: Session,
    clock: FrozenClock,
    referrer_kw: dict[str, Any],
    referee_kw: dict[str, Any],
    reason: str,
) -> None:
    ann = make_member(session, **referrer_kw)
    other = make_member(session, referrer=ann, **referee_kw)
    referral = referral_of(session, other.id)
    assert (referral.status, referral.reason) == ("rejected", reason)


def test_a_loop_is_rejected(session: Session, clock: FrozenClock) -> None:
    # Impossible through enrolment (a new member has referred nobody), so forge the chain.
    ann = make_member(session)
    bob = make_member(session, referrer=ann)
    assert service._is_ancestor(session, bob.id, of=bob) is False
    assert service._is_ancestor(session, ann.id, of=bob) is True
    assert service._is_ancestor(session, bob.id, of=ann) is False


def test_velocity_over_the_limit_holds_new_referrals_for_review(
    session: Session, clock: FrozenClock
) -> None:
    terms(session, velocity_limit=2)
    ann = make_member(session)
    first, second, third = (make_member(session, referrer=ann) for _ in range(3))
    assert [referral_of(session, m.id).status for m in (first, second, third)] == [
        "pending",
        "pending",
        "held",
    ]
    assert referral_of(session, third.id).reason == "velocity"
    assert [r.referee_id for r in service.list_reviews(session).items] == [third.id]
    clock.advance(DAY + dt.timedelta(seconds=1))
    assert referral_of(session, make_member(session, referrer=ann).id).status == "pending"


# --- qualification --------------------------------------------------------------------------


def test_the_first_big_enough_order_qualifies_when_it_activates(
    session: Session, clock: FrozenClock, rewarding: None
) -> None:
    ann = make_member(session)
    bob = make_member(session, referrer=ann)
    place_order(session, bob.id, 2000)  # too small
    place_order(session, bob.id, 6000)
    clock.advance(DAY)
    settle(session, bob.id)
    assert referral_of(session, bob.id).status == "pending"
    clock.advance(WINDOW)
    settle(session, bob.id)
    referral = referral_of(session, bob.id)
    assert referral.status == "qualified"
    assert referral.qualified_at == clock.now()
    assert (referral.referrer_points, referral.referee_points) == (500, 200)
    assert referral.referrer_outcome == "rewarded"
    assert available(session, ann.id) == 500
    assert available(session, bob.id) == 20 + 60 + 200
    assert service.qualified_referrals(session, ann.id) == 1
    # Qualifying again changes nothing.
    assert service.qualify_referral(session, referee_id=bob.id) is False
    settle(session, bob.id)
    assert available(session, ann.id) == 500
    entries = ledger.list_entries(session, ann.id).items
    assert [(e.kind, e.points) for e in entries] == [("bonus", 500)]


def test_orders_in_another_currency_do_not_qualify(
    session: Session, clock: FrozenClock, rewarding: None
) -> None:
    ann = make_member(session)
    bob = make_member(session, referrer=ann)
    place_order(session, bob.id, 90000, currency="EUR")
    clock.advance(WINDOW)
    settle(session, bob.id)
    assert referral_of(session, bob.id).status == "pending"


def test_a_refund_inside_the_window_cancels_the_order_and_a_later_one_qualifies(
    session: Session, clock: FrozenClock, rewarding: None
) -> None:
    ann = make_member(session)
    bob = make_member(session, referrer=ann)
    first = place_order(session, bob.id, 6000)
    clock.advance(2 * DAY)
    refund(session, first, 2000)  # 40.00 left: below the minimum
    clock.advance(WINDOW)
    settle(session, bob.id)
    assert referral_of(session, bob.id).status == "pending"
    assert available(session, ann.id) == 0
    place_order(session, bob.id, 5000)
    clock.advance(WINDOW)
    settle(session, bob.id)
    referral = referral_of(session, bob.id)
    assert referral.status == "qualified"
    assert available(session, ann.id) == 500


def test_disabled_programme_qualifies_nothing_until_the_job_after_reenabling(
    session: Session, clock: FrozenClock, rewarding: None
) -> None:
    terms(session, enabled=False)
    ann = make_member(session)
    bob = make_member(session, referrer=ann)
    place_order(session, bob.id, 6000)
    clock.advance(WINDOW)
    settle(session, bob.id)
    assert referral_of(session, bob.id).status == "pending"
    assert service.run_due(session) == {"referrals qualified": 0}
    terms(session, enabled=True)
    assert service.run_due(session) == {"referrals qualified": 1}
    assert referral_of(session, bob.id).status == "qualified"
    assert service.run_due(session) == {"referrals qualified": 0}


def test_the_job_qualifies_an_order_reported_after_its_window(
    session: Session, clock: FrozenClock, rewarding: None
) -> None:
    ann = make_member(session)
    bob = make_member(session, referrer=ann, enrolled_at=START - 30 * DAY)
    place_order(session, bob.id, 7000, placed_at=START - 20 * DAY)  # active at once: no hook
    assert referral_of(session, bob.id).status == "pending"
    assert service.run_due(session, batch_size=1) == {"referrals qualified": 1}
    assert available(session, ann.id) == 500


def test_qualification_is_published_for_the_referrer(
    session: Session, clock: FrozenClock, rewarding: None
) -> None:
    told: list[ReferralQualified] = []
    ann = make_member(session)
    bob = make_member(session, referrer=ann)
    place_order(session, bob.id, 6000)
    clock.advance(WINDOW)
    with bus.extra_subscribers([(ReferralQualified, lambda _, event: told.append(event))]):
        settle(session, bob.id)
    referral = referral_of(session, bob.id)
    assert [(e.member_id, e.referrer_id, e.referee_id, e.referral_id) for e in told] == [
        (ann.id, ann.id, bob.id, referral.id)
    ]
    assert told[0].occurred_at == clock.now()


def test_catalogue_rewards_are_given_as_free_claims(session: Session, clock: FrozenClock) -> None:
    tote = rewards_service.create_reward(
        session, kind="custom", name="Tote", points_cost=100, actor="t"
    )
    terms(session, referrer_reward_id=tote.id, referee_reward_id=tote.id)
    ann = make_member(session)
    bob = make_member(session, referrer=ann)
    place_order(session, bob.id, 100)
    clock.advance(WINDOW)
    settle(session, bob.id)
    referral = referral_of(session, bob.id)
    claims = {c.id: c for c in session.scalars(select(Claim))}
    assert set(claims) == {referral.referrer_claim_id, referral.referee_claim_id}
    assert {(c.member_id, c.source, c.points) for c in claims.values()} == {
        (ann.id, "gift", 0),
        (bob.id, "gift", 0),
    }
    assert referral.referrer_outcome == "rewarded" and referral.referrer_points == 0


def test_without_rewards_the_referral_still_qualifies(session: Session, clock: FrozenClock) -> None:
    ann = make_member(session)
    bob = make_member(session, referrer=ann)
    place_order(session, bob.id, 100)
    clock.advance(WINDOW)
    settle(session, bob.id)
    referral = referral_of(session, bob.id)
    assert (referral.status, referral.referrer_outcome) == ("qualified", "no_reward")


# --- caps -----------------------------------------------------------------------------------


def qualify(session: Session, clock: FrozenClock, referee_id: str) -> None:
    place_order(session, referee_id, 6000)
    clock.advance(WINDOW)
    settle(session, referee_id)


def test_the_monthly_cap_stops_the_referrer_not_the_referee(
    session: Session, clock: FrozenClock, rewarding: None
) -> None:
    terms(session, monthly_cap=2)
    clock.set(dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    ann = make_member(session)
    referees = [make_member(session, referrer=ann) for _ in range(4)]
    for referee in referees[:3]:
        place_order(session, referee.id, 6000)
    clock.advance(WINDOW)
    for referee in referees[:3]:
        settle(session, referee.id)
    outcomes = [referral_of(session, r.id).referrer_outcome for r in referees[:3]]
    assert outcomes == ["rewarded", "rewarded", "monthly_cap"]
    assert available(session, ann.id) == 1000
    assert [referral_of(session, r.id).referee_points for r in referees[:3]] == [200] * 3
    clock.set(dt.datetime(2026, 4, 1, tzinfo=dt.UTC))  # a new month
    qualify(session, clock, referees[3].id)
    assert referral_of(session, referees[3].id).referrer_outcome == "rewarded"
    assert available(session, ann.id) == 1500


def test_the_total_cap(session: Session, clock: FrozenClock, rewarding: None) -> None:
    terms(session, total_cap=1)
    ann = make_member(session)
    first, second = make_member(session, referrer=ann), make_member(session, referrer=ann)
    qualify(session, clock, first.id)
    qualify(session, clock, second.id)
    assert referral_of(session, second.id).referrer_outcome == "total_cap"
    assert available(session, ann.id) == 500


def test_a_closed_referrer_gets_nothing(
    session: Session, clock: FrozenClock, rewarding: None
) -> None:
    from loyalty.members import service as members_service

    ann = make_member(session)
    bob = make_member(session, referrer=ann)
    members_service.update_member(session, member_id=ann.id, changes={"status": "suspended"})
    qualify(session, clock, bob.id)
    referral = referral_of(session, bob.id)
    assert (referral.referrer_outcome, referral.referee_points) == ("referrer_inactive", 200)


# --- shared tier ----------------------------------------------------------------------------


def test_the_referee_shares_the_referrers_higher_tier_for_n_days(
    session: Session, clock: FrozenClock, rewarding: None
) -> None:
    tiers_service.create_tier(session, code="silver", name="Silver", rank=1, threshold=0, actor="t")
    tiers_service.create_tier(session, code="gold", name="Gold", rank=2, threshold=10**9, actor="t")
    terms(session, shared_tier_days=30)
    ann = make_member(session)
    tiers_service.assign_tier(session, member_id=ann.id, tier="gold", reason="vip", actor="t")
    bob = make_member(session, referrer=ann)
    qualify(session, clock, bob.id)
    view = tiers_service.get_member_tier(session, bob.id)
    assert view.tier is not None and view.tier.code == "gold"
    assert (view.source, view.until) == ("manual", clock.now() + 30 * DAY)


def test_no_shared_tier_when_the_referee_is_as_high(
    session: Session, clock: FrozenClock, rewarding: None
) -> None:
    tiers_service.create_tier(session, code="silver", name="Silver", rank=1, threshold=0, actor="t")
    terms(session, shared_tier_days=30)
    ann = make_member(session)
    bob = make_member(session, referrer=ann)
    qualify(session, clock, bob.id)
    assert tiers_service.get_member_tier(session, bob.id).source == "computed"


# --- clawback -------------------------------------------------------------------------------


def test_a_refund_below_the_minimum_after_qualification_claws_back_both_sides(
    session: Session, clock: FrozenClock, rewarding: None
) -> None:
    ann = make_member(session)
    bob = make_member(session, referrer=ann)
    order = place_order(session, bob.id, 6000)
    clock.advance(WINDOW)
    settle(session, bob.id)
    refund(session, order, 500)  # 55.00 left: still qualifies
    assert referral_of(session, bob.id).status == "qualified"
    refund(session, order, 1000)  # 45.00 left
    referral = referral_of(session, bob.id)
    assert referral.status == "clawed_back" and referral.clawed_back_at == clock.now()
    assert (referral.referrer_points_clawed_back, referral.referee_points_clawed_back) == (500, 200)
    assert available(session, ann.id) == 0
    assert available(session, bob.id) == 60 - 15 + 200 - 200
    assert service.qualified_referrals(session, ann.id) == 0
    refund(session, order, 4500)  # wholly refunded: nothing more to claw back
    assert available(session, ann.id) == 0


def test_a_clawback_of_spent_points_forgives_them_within_balance(
    session: Session, clock: FrozenClock, rewarding: None
) -> None:
    ann = make_member(session)
    bob = make_member(session, referrer=ann)
    order = place_order(session, bob.id, 6000)
    clock.advance(WINDOW)
    settle(session, bob.id)
    ledger.redeem(session, member_id=ann.id, points=400, reason="spent")
    refund(session, order, 6000)
    referral = referral_of(session, bob.id)
    assert referral.referrer_points_clawed_back == 100
    assert available(session, ann.id) == 0


def test_a_clawed_back_referral_frees_a_cap_slot(
    session: Session, clock: FrozenClock, rewarding: None
) -> None:
    terms(session, total_cap=1)
    ann = make_member(session)
    first, second = make_member(session, referrer=ann), make_member(session, referrer=ann)
    order = place_order(session, first.id, 6000)
    clock.advance(WINDOW)
    settle(session, first.id)
    refund(session, order, 6000)
    qualify(session, clock, second.id)
    assert referral_of(session, second.id).referrer_outcome == "rewarded"


# --- review ---------------------------------------------------------------------------------


def test_approving_a_held_referral_qualifies_it_when_its_order_already_activated(
    session: Session, clock: FrozenClock, rewarding: None
) -> None:
    terms(session, velocity_limit=1)
    ann = make_member(session)
    make_member(session, referrer=ann)
    bob = make_member(session, referrer=ann)
    referral = referral_of(session, bob.id)
    assert referral.status == "held"
    qualify(session, clock, bob.id)
    assert referral_of(session, bob.id).status == "held"  # held referrals do not qualify
    approved = service.approve_referral(
        session, referral_id=referral.id, reason="Known customer", actor="manager"
    )
    assert (approved.status, approved.note, approved.reviewed_by) == (
        "qualified",
        "Known customer",
        "manager",
    )
    assert available(session, ann.id) == 500
    record = session.scalar(select(AuditRecord).where(AuditRecord.entity_id == referral.id))
    assert record is not None
    assert (record.action, record.reason) == ("approved", "Known customer")
    with pytest.raises(ReferralNotReviewableError):
        service.approve_referral(session, referral_id=referral.id, reason="again", actor="m")


def test_approving_without_an_order_makes_it_pending(
    session: Session, clock: FrozenClock, rewarding: None
) -> None:
    ann = make_member(session, email="a@x.com")
    bob = make_member(session, referrer=ann, email="a@x.com")
    referral = referral_of(session, bob.id)
    assert referral.status == "rejected"
    approved = service.approve_referral(session, referral_id=referral.id, reason="ok", actor="m")
    assert approved.status == "pending"


def test_rejecting(session: Session, clock: FrozenClock, rewarding: None) -> None:
    ann = make_member(session)
    bob = make_member(session, referrer=ann)
    referral_id = referral_of(session, bob.id).id
    rejected = service.reject_referral(session, referral_id=referral_id, reason="Fraud", actor="m")
    assert (rejected.status, rejected.reason, rejected.note) == ("rejected", "manual", "Fraud")
    qualify(session, clock, bob.id)
    assert referral_of(session, bob.id).status == "rejected"
    assert available(session, ann.id) == 0
    with pytest.raises(ReferralNotReviewableError):
        service.reject_referral(session, referral_id=referral_id, reason="again", actor="m")
    with pytest.raises(ReferralNotFoundError):
        service.reject_referral(session, referral_id="ref_nope", reason="x", actor="m")
    with pytest.raises(ReferralNotFoundError):
        service.approve_referral(session, referral_id="ref_nope", reason="x", actor="m")


# --- terms and the member's view ------------------------------------------------------------


def test_terms_are_validated_and_audited(session: Session, clock: FrozenClock) -> None:
    settings = terms(session, referrer_points=300, link_template="https://s.example/r/{code}")
    assert settings.referrer_points == 300 and settings.updated_by == "test"
    record = session.scalar(
        select(AuditRecord).where(AuditRecord.entity_type == "referral_settings")
    )
    assert record is not None and record.after is not None
    assert record.after["referrer_points"] == 300
    with pytest.raises(UnknownRewardError) as caught:
        terms(session, referee_reward_id="rwd_nope")
    assert caught.value.field == "referee_reward_id"
    with pytest.raises(InvalidFieldError):
        terms(session, link_template="https://s.example/r/")


def test_the_members_view(session: Session, clock: FrozenClock, rewarding: None) -> None:
    terms(session, link_template="https://shop.example/join?ref={code}")
    ann = make_member(session)
    bob = make_member(session, referrer=ann, name="Bob Jones")
    clock.advance(DAY)
    make_member(session, referrer=ann, email="carol@example.com")
    make_member(session, referrer=ann, email="x@x.com", metadata={"device_id": "d"})
    ann_device = make_member(session, metadata={"device_id": "d"})
    make_member(session, referrer=ann_device, metadata={"device_id": "d"})
    qualify(session, clock, bob.id)
    view = service.member_referrals(session, ann.id, limit=2)
    assert view.referral_code == ann.referral_code
    assert view.link == f"https://shop.example/join?ref={ann.referral_code}"
    assert view.counts == {
        "invited": 3,
        "pending": 2,
        "qualified": 1,
        "held": 0,
        "rejected": 0,
        "clawed_back": 0,
    }
    assert view.points_earned == 500
    assert [(r.name, r.status) for r in view.items] == [
        ("x***@x.com", "pending"),
        ("c***@example.com", "pending"),
    ]
    rest = service.member_referrals(session, ann.id, limit=2, cursor=view.next_cursor)
    assert [(r.name, r.status, r.qualified_at) for r in rest.items] == [
        ("Bob", "qualified", clock.now())
    ]
    assert rest.next_cursor is None
    with pytest.raises(MemberNotFoundError):
        service.member_referrals(session, "mem_nope")
