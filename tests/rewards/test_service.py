"""Perks, the rewards catalogue, claims and the due work, through the service layer on
PostgreSQL. The ledger's invariants are checked after every test (see conftest)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.audit import service as audit
from loyalty.clock import FrozenClock
from loyalty.errors import InvalidFieldError, MemberNotActiveError, UnknownRewardError
from loyalty.ledger import service as ledger
from loyalty.ledger.errors import InsufficientPointsError
from loyalty.ledger.models import Entry
from loyalty.members import service as members_service
from loyalty.members.errors import MemberNotFoundError
from loyalty.referrals import service as referrals_service
from loyalty.rewards import rules, service
from loyalty.rewards.errors import (
    ClaimLimitReachedError,
    ClaimNotFoundError,
    ClaimNotIssuedError,
    PerkInUseError,
    PerkNotFoundError,
    RewardInUseError,
    RewardNotClaimableError,
    RewardNotFoundError,
    RewardOutOfStockError,
    UnknownTierCodeError,
)
from loyalty.rewards.models import Claim, PerkGrant, Reward
from tests.rewards.conftest import DAY, START, make_perk

Member = Callable[..., str]
MakeReward = Callable[..., Reward]


def available(session: Session, member_id: str) -> int:
    return ledger.get_balance(session, member_id).available


# --- catalogue ------------------------------------------------------------------------------


def test_create_update_and_delete_a_reward_are_audited(
    session: Session, tiers: None, reward: MakeReward
) -> None:
    created = reward(
        kind="fixed_discount",
        name="$5 off",
        points_cost=500,
        amount=500,
        currency="USD",
        tier_codes=["gold"],
        stock=10,
        per_member_limit=2,
    )
    assert created.id.startswith("rwd_")
    assert (created.coupon_valid_days, created.active, created.tier_codes) == (30, True, ["gold"])
    changed = service.update_reward(
        session, reward_id=created.id, changes={"stock": 3, "name": "$5 off!"}, actor="ann"
    )
    assert (changed.stock, changed.name) == (3, "$5 off!")
    service.delete_reward(session, reward_id=created.id, actor="ann")
    with pytest.raises(RewardNotFoundError):
        service.get_reward(session, created.id)
    records = audit.list_records(session, entity_type="reward", entity_id=created.id).items
    assert [r.action for r in records] == ["deleted", "updated", "created"]
    assert records[1].before is not None and records[1].after is not None
    assert (records[1].before["stock"], records[1].after["stock"]) == (10, 3)
    assert records[2].actor == "test" and records[0].actor == "ann"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"kind": "fixed_discount", "amount": 500}, "currency"),
        ({"kind": "percentage_discount"}, "percent"),
        ({"kind": "free_product", "percent": 5, "sku": "mug"}, "percent"),
        (
            {"available_from": START + DAY, "available_until": START},
            "available_until",
        ),
    ],
)
def test_reward_values_must_fit_the_kind(
    session: Session, reward: MakeReward, values: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidFieldError) as raised:
        reward(**values)
    assert raised.value.field == field


def test_an_update_is_checked_against_the_whole_reward(
    session: Session, reward: MakeReward
) -> None:
    created = reward(kind="percentage_discount", percent=10)
    with pytest.raises(InvalidFieldError):
        service.update_reward(session, reward_id=created.id, changes={"percent": None}, actor="a")
    with pytest.raises(RewardNotFoundError):
        service.update_reward(session, reward_id="rwd_nope", changes={}, actor="a")


def test_tier_codes_must_be_on_the_ladder(
    session: Session, tiers: None, reward: MakeReward
) -> None:
    with pytest.raises(UnknownTierCodeError) as raised:
        reward(tier_codes=["gold", "platinum"])
    assert raised.value.tier_codes == ["platinum"]
    assert raised.value.data == {}  # the codes sent are not repeated to the client
    with pytest.raises(UnknownTierCodeError):
        make_perk(session, tier_codes=["bronze"])


def test_a_claimed_reward_cannot_be_deleted(
    session: Session, member: Member, reward: MakeReward
) -> None:
    r = reward()
    service.claim_reward(session, member_id=member(points=100), reward_id=r.id)
    with pytest.raises(RewardInUseError):
        service.delete_reward(session, reward_id=r.id, actor="a")
    service.update_reward(session, reward_id=r.id, changes={"active": False}, actor="a")
    assert service.list_rewards(session, active=True).items == []
    assert service.list_rewards(session, active=False).items == [r]


def test_reward_pages(session: Session, reward: MakeReward) -> None:
    made = [reward(name=f"r{i}") for i in range(3)]
    first = service.list_rewards(session, limit=2)
    assert first.items == made[:2] and first.next_cursor == made[1].id
    second = service.list_rewards(session, limit=2, cursor=first.next_cursor)
    assert second.items == made[2:] and second.next_cursor is None


# --- perks ----------------------------------------------------------------------------------


def test_perk_crud_is_audited(session: Session, tiers: None, reward: MakeReward) -> None:
    gift = reward(name="Birthday mug", kind="free_product", sku="mug")
    perk = make_perk(
        session, kind="birthday_gift", name="Birthday", bonus_points=200, reward_id=gift.id
    )
    assert perk.id.startswith("prk_")
    discount = make_perk(session, kind="exclusive_discount", percent=10, tier_codes=["gold"])
    service.update_perk(session, perk_id=discount.id, changes={"percent": 15}, actor="ann")
    assert service.get_perk(session, discount.id).percent == 15
    assert [p.id for p in service.list_perks(session).items] == [perk.id, discount.id]
    assert [p.id for p in service.list_perks(session, kind="birthday_gift").items] == [perk.id]
    with pytest.raises(RewardInUseError):  # a perk gives it
        service.delete_reward(session, reward_id=gift.id, actor="a")
    service.delete_perk(session, perk_id=discount.id, actor="ann")
    with pytest.raises(PerkNotFoundError):
        service.get_perk(session, discount.id)
    actions = [
        r.action
        for r in audit.list_records(session, entity_type="perk", entity_id=discount.id).items
    ]
    assert actions == ["deleted", "updated", "created"]


def test_perk_values_are_checked(session: Session, tiers: None) -> None:
    with pytest.raises(InvalidFieldError) as raised:
        make_perk(session, kind="exclusive_discount")
    assert raised.value.field == "percent"
    with pytest.raises(InvalidFieldError) as raised:
        make_perk(session, kind="birthday_gift")
    assert raised.value.field == "bonus_points"
    with pytest.raises(UnknownRewardError):
        make_perk(session, kind="birthday_gift", reward_id="rwd_nope")
    perk = make_perk(session, kind="birthday_gift", bonus_points=5)
    with pytest.raises(InvalidFieldError):
        service.update_perk(session, perk_id=perk.id, changes={"bonus_points": None}, actor="a")
    with pytest.raises(PerkNotFoundError):
        service.update_perk(session, perk_id="prk_nope", changes={}, actor="a")


# --- claims ---------------------------------------------------------------------------------


def test_claiming_spends_points_takes_stock_and_issues_a_coupon(
    session: Session, member: Member, reward: MakeReward, clock: FrozenClock
) -> None:
    m = member(points=300)
    r = reward(points_cost=120, stock=2, coupon_valid_days=7)
    result = service.claim_reward(
        session, member_id=m, reward_id=r.id, reference="cart-1", client_id="cli_x"
    )
    claim = result.claim
    assert claim.id.startswith("clm_")
    assert (claim.status, claim.state, claim.points, claim.source) == (
        "issued",
        "issued",
        120,
        "purchase",
    )
    assert rules.is_coupon_code(claim.coupon_code)
    assert claim.expires_at == START + 7 * DAY
    assert result.balance.available == 180 == available(session, m)
    assert service.get_reward(session, r.id).stock == 1
    entry = session.scalars(
        select(Entry).where(Entry.member_id == m).order_by(Entry.id.desc())
    ).first()
    assert entry is not None and (entry.kind, entry.points) == ("redemption", -120)
    assert entry.reference_id == claim.redemption_id and entry.external_reference == "cart-1"
    assert service.get_claim(session, claim.id) is claim
    assert service.find_claims(session, coupon_code=claim.coupon_code.lower()).items == [claim]
    dashed = "-".join(claim.coupon_code[i : i + 4] for i in range(0, 16, 4))
    assert service.find_claims(session, coupon_code=dashed).items == [claim]
    assert service.find_claims(session, coupon_code="NOPE").items == []


def test_claim_refusals_change_nothing(
    session: Session, member: Member, reward: MakeReward, tiers: None, clock: FrozenClock
) -> None:
    m = member(points=150)
    costly = reward(points_cost=200, stock=5)
    with pytest.raises(InsufficientPointsError):
        service.claim_reward(session, member_id=m, reward_id=costly.id)
    assert service.get_reward(session, costly.id).stock == 5
    assert available(session, m) == 150
    cases: list[tuple[Reward, type[Exception], str | None]] = [
        (reward(stock=0), RewardOutOfStockError, "out_of_stock"),
        (reward(active=False), RewardNotClaimableError, "inactive"),
        (reward(available_from=START + DAY), RewardNotClaimableError, "not_yet_available"),
        (reward(available_until=START), RewardNotClaimableError, "no_longer_available"),
        (reward(tier_codes=["gold"]), RewardNotClaimableError, "tier"),
    ]
    for r, error, reason in cases:
        with pytest.raises(error) as raised:
            service.claim_reward(session, member_id=m, reward_id=r.id)
        assert raised.value.data["reason"] == reason  # type: ignore[attr-defined]
    assert available(session, m) == 150
    assert session.scalars(select(Claim)).all() == []
    with pytest.raises(MemberNotFoundError):
        service.claim_reward(session, member_id="mem_nope", reward_id=costly.id)
    with pytest.raises(RewardNotFoundError):
        service.claim_reward(session, member_id=m, reward_id="rwd_nope")


def test_tier_eligible_member_can_claim(
    session: Session, member: Member, reward: MakeReward, tiers: None
) -> None:
    gold = member(points=100, tier="gold")
    r = reward(tier_codes=["gold"])
    assert service.claim_reward(session, member_id=gold, reward_id=r.id).claim.points == 100
    silver_only = reward(tier_codes=["silver"])
    assert service.claim_reward(session, member_id=member(points=100), reward_id=silver_only.id)


def test_per_member_limit_counts_claims_not_cancelled(
    session: Session, member: Member, reward: MakeReward
) -> None:
    m = member(points=1000)
    r = reward(per_member_limit=2)
    first = service.claim_reward(session, member_id=m, reward_id=r.id).claim
    service.claim_reward(session, member_id=m, reward_id=r.id)
    with pytest.raises(ClaimLimitReachedError) as raised:
        service.claim_reward(session, member_id=m, reward_id=r.id)
    assert raised.value.data["limit"] == 2
    service.cancel_claim(session, claim_id=first.id)
    service.claim_reward(session, member_id=m, reward_id=r.id)
    assert service.claim_reward(session, member_id=member(points=100), reward_id=r.id)


def test_an_inactive_member_cannot_claim(
    session: Session, member: Member, reward: MakeReward
) -> None:
    m = member(points=500)
    members_service.update_member(session, member_id=m, changes={"status": "suspended"})
    with pytest.raises(MemberNotActiveError):
        service.claim_reward(session, member_id=m, reward_id=reward().id)


def test_cancel_gives_points_and_stock_back(
    session: Session, member: Member, reward: MakeReward, clock: FrozenClock
) -> None:
    m = member(points=250)
    r = reward(points_cost=200, stock=1)
    claim = service.claim_reward(session, member_id=m, reward_id=r.id).claim
    clock.advance(DAY)
    result = service.cancel_claim(session, claim_id=claim.id, actor="shop")
    assert (result.state, result.points_returned, result.balance.available) == (
        "cancelled",
        200,
        250,
    )
    assert result.claim.cancelled_at == START + DAY
    assert service.get_reward(session, r.id).stock == 1
    assert available(session, m) == 250
    with pytest.raises(ClaimNotIssuedError) as raised:
        service.cancel_claim(session, claim_id=claim.id)
    assert raised.value.data["claim_status"] == "cancelled"
    with pytest.raises(ClaimNotIssuedError):
        service.use_claim(session, claim_id=claim.id)
    with pytest.raises(ClaimNotFoundError):
        service.cancel_claim(session, claim_id="clm_nope")


def test_a_used_claim_cannot_be_used_again_or_cancelled(
    session: Session, member: Member, reward: MakeReward, clock: FrozenClock
) -> None:
    m = member(points=100)
    claim = service.claim_reward(session, member_id=m, reward_id=reward().id).claim
    used = service.use_claim(session, claim_id=claim.id)
    assert (used.state, used.used_at) == ("used", START)
    with pytest.raises(ClaimNotIssuedError):
        service.use_claim(session, claim_id=claim.id)
    with pytest.raises(ClaimNotIssuedError):
        service.cancel_claim(session, claim_id=claim.id)
    assert available(session, m) == 0
    with pytest.raises(ClaimNotFoundError):
        service.use_claim(session, claim_id="clm_nope")


def test_a_claim_past_its_expiry_counts_as_expired_before_the_job_runs(
    session: Session, member: Member, reward: MakeReward, clock: FrozenClock
) -> None:
    m = member(points=300)
    r = reward(coupon_valid_days=10)
    claim = service.claim_reward(session, member_id=m, reward_id=r.id).claim
    kept = service.claim_reward(session, member_id=m, reward_id=reward(coupon_valid_days=30).id)
    clock.advance(10 * DAY)
    assert (claim.status, claim.state) == ("issued", "expired")
    for action in (service.use_claim, service.cancel_claim):
        with pytest.raises(ClaimNotIssuedError) as raised:
            action(session, claim_id=claim.id)
        assert raised.value.data["claim_status"] == "expired"
    assert [c.id for c in service.list_member_claims(session, m, status="expired").items] == [
        claim.id
    ]
    assert [c.id for c in service.list_member_claims(session, m, status="issued").items] == [
        kept.claim.id
    ]
    assert service.run_due(session) == {"birthday gifts": 0, "claims expired": 1}
    session.refresh(claim)
    assert (claim.status, claim.expired_at) == ("expired", START + 10 * DAY)
    assert available(session, m) == 100  # an expired claim's points are not returned
    assert service.run_due(session) == {"birthday gifts": 0, "claims expired": 0}


def test_cancel_returns_only_points_whose_lot_is_still_alive(
    session: Session, member: Member, reward: MakeReward, clock: FrozenClock
) -> None:
    ledger.update_settings(session, changes={"expiry_months": 1}, actor="test")
    m = member(points=100)
    clock.advance(20 * DAY)
    ledger.adjust(session, member_id=m, points=100, reason="later", actor="test")
    claim = service.claim_reward(
        session, member_id=m, reward_id=reward(points_cost=150, coupon_valid_days=60).id
    ).claim  # 100 from the first lot (expiring first), 50 from the second
    clock.advance(15 * DAY)  # the first lot has expired
    result = service.cancel_claim(session, claim_id=claim.id)
    assert (result.points_returned, result.balance.available) == (50, 100)


def test_member_claims_newest_first_in_pages(
    session: Session, member: Member, reward: MakeReward
) -> None:
    m = member(points=1000)
    r = reward(points_cost=10)
    ids = [service.claim_reward(session, member_id=m, reward_id=r.id).claim.id for _ in range(3)]
    first = service.list_member_claims(session, m, limit=2)
    assert [c.id for c in first.items] == ids[::-1][:2]
    rest = service.list_member_claims(session, m, limit=2, cursor=first.next_cursor)
    assert [c.id for c in rest.items] == ids[:1] and rest.next_cursor is None
    service.use_claim(session, claim_id=ids[0])
    assert [c.id for c in service.list_member_claims(session, m, status="used").items] == ids[:1]
    with pytest.raises(MemberNotFoundError):
        service.list_member_claims(session, "mem_nope")


# --- the member's view ----------------------------------------------------------------------


def test_storefront_view_says_why_a_reward_cannot_be_claimed(
    session: Session, member: Member, reward: MakeReward, tiers: None, clock: FrozenClock
) -> None:
    m = member(points=150)
    limited = reward(name="limited", per_member_limit=1, points_cost=50)
    service.claim_reward(session, member_id=m, reward_id=limited.id)
    expected = {
        "open": (reward(name="open", points_cost=100), None),
        "limited": (limited, "limit_reached"),
        "costly": (reward(name="costly", points_cost=101), "insufficient_points"),
        "gold": (reward(name="gold", tier_codes=["gold"]), "tier"),
        "gone": (reward(name="gone", stock=0), "out_of_stock"),
        "soon": (reward(name="soon", available_from=START + DAY), "not_yet_available"),
        "over": (reward(name="over", available_until=START), "no_longer_available"),
    }
    reward(name="hidden", active=False)
    offers = {o.name: o for o in service.member_rewards(session, m).items}
    assert set(offers) == set(expected)
    for name, (_, reason) in expected.items():
        assert (offers[name].eligible, offers[name].reason) == (reason is None, reason), name
    assert offers["open"].points_cost == 100
    members_service.update_member(session, member_id=m, changes={"status": "suspended"})
    assert {o.reason for o in service.member_rewards(session, m).items} == {"member_not_active"}
    with pytest.raises(MemberNotFoundError):
        service.member_rewards(session, "mem_nope")


def test_member_perks_are_those_of_the_current_tier(
    session: Session, member: Member, tiers: None, clock: FrozenClock
) -> None:
    shipping = make_perk(session, kind="free_shipping", tier_codes=["silver", "gold"])
    birthday = make_perk(session, kind="birthday_gift", name="Bday", bonus_points=50)
    make_perk(session, kind="early_access", name="Early", tier_codes=["gold"], active=False)
    silver = member(birthday=dt.date(1990, 7, 4))
    gold = member(tier="gold", birthday=dt.date(1990, 1, 4), timezone="Europe/Paris")
    assert [p.id for p in service.member_perks(session, silver)] == [shipping.id]
    perks = service.member_perks(session, gold)
    assert [p.id for p in perks] == [shipping.id, birthday.id]
    assert perks[0].birthday is None
    assert perks[1].birthday == service.BirthdayStatus(2026, None, "2027-01")
    no_birthday = member(tier="gold")
    assert service.member_perks(session, no_birthday)[1].birthday == service.BirthdayStatus(
        2026, None, None
    )
    with pytest.raises(MemberNotFoundError):
        service.member_perks(session, "mem_nope")


def test_no_ladder_no_perks(session: Session, member: Member) -> None:
    make_perk(session, tier_codes=[])
    assert service.member_perks(session, member()) == []


# --- birthday gifts -------------------------------------------------------------------------


def test_birthday_gift_is_granted_once_a_year_in_the_birthday_month(
    session: Session, member: Member, reward: MakeReward, tiers: None, clock: FrozenClock
) -> None:
    mug = reward(name="Mug", kind="free_product", sku="mug", stock=0, coupon_valid_days=31)
    perk = make_perk(session, kind="birthday_gift", name="Bday", bonus_points=200, reward_id=mug.id)
    due = member(tier="gold", birthday=dt.date(1990, 3, 20))
    later = member(tier="gold", birthday=dt.date(1991, 4, 2))
    silver = member(birthday=dt.date(1990, 3, 1))  # the perk is gold's
    suspended = member(tier="gold", birthday=dt.date(1990, 3, 1))
    members_service.update_member(session, member_id=suspended, changes={"status": "suspended"})
    no_birthday = member(tier="gold")

    assert service.run_due(session, batch_size=2) == {"birthday gifts": 1, "claims expired": 0}
    assert available(session, due) == 200
    for other in (later, silver, suspended, no_birthday):
        assert ledger.get_balance(session, other).lifetime_earned == 0
    [claim] = service.list_member_claims(session, due).items
    assert (claim.source, claim.points, claim.reward_id, claim.state) == (
        "gift",
        0,
        mug.id,
        "issued",
    )
    assert claim.redemption_id is None
    assert claim.expires_at == START + 31 * DAY
    [grant] = session.scalars(select(PerkGrant)).all()
    assert (grant.member_id, grant.year, grant.points, grant.claim_id) == (due, 2026, 200, claim.id)
    entry = session.scalars(
        select(Entry).where(Entry.member_id == due, Entry.kind == "bonus")
    ).one()
    assert (entry.reference_type, entry.reference_id) == ("perk", perk.id)

    [status] = service.member_perks(session, due)
    assert status.birthday == service.BirthdayStatus(2026, START, "2027-03")

    clock.advance(5 * DAY)
    assert service.run_due(session)["birthday gifts"] == 0  # once a year
    # Cancelling a gift claim returns no points and leaves the stock alone.
    result = service.cancel_claim(session, claim_id=claim.id)
    assert (result.points_returned, result.state) == (0, "cancelled")
    assert service.get_reward(session, mug.id).stock == 0
    clock.set(dt.datetime(2026, 4, 15, tzinfo=dt.UTC))
    assert service.run_due(session)["birthday gifts"] == 1  # later's month
    assert available(session, later) == 200

    with pytest.raises(PerkInUseError):
        service.delete_perk(session, perk_id=perk.id, actor="a")
    clock.set(dt.datetime(2027, 3, 1, tzinfo=dt.UTC))
    assert service.run_due(session)["birthday gifts"] == 1  # next year again
    assert ledger.get_balance(session, due).lifetime_earned == 400


def test_birthday_month_follows_the_members_time_zone(
    session: Session, member: Member, tiers: None, clock: FrozenClock
) -> None:
    make_perk(session, kind="birthday_gift", name="Bday", bonus_points=10, tier_codes=["silver"])
    clock.set(dt.datetime(2026, 2, 28, 16, 0, tzinfo=dt.UTC))
    tokyo = member(birthday=dt.date(1990, 3, 5), timezone="Asia/Tokyo")
    los_angeles = member(birthday=dt.date(1990, 3, 5), timezone="America/Los_Angeles")
    assert service.run_due(session)["birthday gifts"] == 1
    assert available(session, tokyo) == 10 and available(session, los_angeles) == 0
    clock.set(dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC))
    assert service.run_due(session)["birthday gifts"] == 1
    assert available(session, los_angeles) == 10


def test_an_inactive_birthday_perk_grants_nothing(
    session: Session, member: Member, tiers: None, clock: FrozenClock
) -> None:
    make_perk(session, kind="birthday_gift", bonus_points=10, tier_codes=["silver"], active=False)
    member(birthday=dt.date(1990, 3, 5))
    assert service.run_due(session) == {"birthday gifts": 0, "claims expired": 0}


def test_a_claim_retried_with_its_reference_is_made_once(
    session: Session, member: Callable[..., str], reward: Callable[..., Reward]
) -> None:
    mid = member(points=500)
    item = reward(points_cost=100, stock=5)
    first = service.claim_reward(session, member_id=mid, reward_id=item.id, reference="cart-1")
    again = service.claim_reward(session, member_id=mid, reward_id=item.id, reference="cart-1")
    assert (first.created, again.created) == (True, False)
    assert again.claim.id == first.claim.id
    assert ledger.get_balance(session, mid).available == 400
    other = service.claim_reward(session, member_id=mid, reward_id=item.id, reference="cart-2")
    assert other.created and other.claim.id != first.claim.id
    assert ledger.get_balance(session, mid).available == 300


def test_a_reward_the_referral_terms_give_cannot_be_deleted(
    session: Session, reward: Callable[..., Reward]
) -> None:
    gift = reward(points_cost=100)
    referrals_service.update_settings(session, changes={"referee_reward_id": gift.id}, actor="test")
    with pytest.raises(RewardInUseError):
        service.delete_reward(session, reward_id=gift.id, actor="test")
