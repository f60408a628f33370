"""Earning rules applied to real orders on PostgreSQL: multipliers, exclusions, minimum,
tiers, campaigns (targets, windows, budgets), caps, previews and the audit trail."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from loyalty.audit import service as audit_service
from loyalty.clock import FrozenClock
from loyalty.db import request_transaction
from loyalty.earning import service
from loyalty.earning.errors import CampaignInUseError, MultiplierConflictError
from loyalty.earning.models import Campaign
from loyalty.errors import InvalidFieldError
from loyalty.ledger import service as ledger_service
from loyalty.ledger.models import Entry, Order
from loyalty.members.errors import MemberNotFoundError
from loyalty.tiers import service as tiers_service
from tests.ledger.conftest import START, order
from tests.ledger.test_statements import counting

DAY = dt.timedelta(days=1)


def campaign(session: Session, **values: Any) -> Campaign:
    values.setdefault("name", "Double Points")
    values.setdefault("starts_at", START - DAY)
    values.setdefault("ends_at", START + 30 * DAY)
    values.setdefault("multiplier", Decimal(2))
    return service.create_campaign(session, actor="manager", **values)


def ladder(session: Session) -> None:
    tiers_service.create_tier(
        session, code="member", name="Member", rank=1, threshold=0, actor="manager"
    )
    tiers_service.create_tier(
        session,
        code="gold",
        name="Gold",
        rank=2,
        threshold=100,
        points_multiplier=Decimal("1.25"),
        actor="manager",
    )


ITEMS = [
    {"sku": "boot", "category": "shoes", "quantity": 1, "unit_price": 8000},
    {"sku": "card", "category": "gift-cards", "quantity": 1, "unit_price": 4000},
]


def test_the_order_stores_its_breakdown_and_the_entry_explains_it(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    service.create_multiplier(
        session, scope="category", match="shoes", multiplier=Decimal(2), actor="manager"
    )
    service.update_earning_settings(
        session, changes={"excluded_categories": ["gift-cards"]}, actor="manager"
    )
    mid = member()
    result = order(session, mid, 12000, items=ITEMS, order_id="o-break")
    # 120.00 shared by price: boot 80, gift card 40 (excluded). Base 80, shoes x2 +80.
    assert result["points"] == 160
    assert result["description"] == "base 80 + shoes x2 +80"
    stored = session.scalar(select(Order).where(Order.order_id == "o-break"))
    assert stored is not None
    assert [c["kind"] for c in stored.breakdown] == ["base", "product"]
    assert [item["points"] for item in stored.items] == [160, 0]
    entry = session.scalar(select(Entry).where(Entry.id == stored.entry_id))
    assert entry is not None and entry.reason == "base 80 + shoes x2 +80"


def test_refunding_an_excluded_item_reverses_nothing_and_the_rest_reverses_its_points(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    service.update_earning_settings(
        session, changes={"excluded_categories": ["gift-cards"]}, actor="manager"
    )
    mid = member()
    order(session, mid, 12000, items=ITEMS, order_id="o-ref")
    card = ledger_service.refund_order(
        session,
        client_id="cli_test",
        order_id="o-ref",
        refund_id="r-card",
        items=[{"sku": "card", "quantity": 1}],
    )
    assert card.body["points_reversed"] == 0
    boot = ledger_service.refund_order(
        session,
        client_id="cli_test",
        order_id="o-ref",
        refund_id="r-boot",
        items=[{"sku": "boot", "quantity": 1}],
    )
    assert boot.body["points_reversed"] == 80
    assert boot.body["balance"]["pending"] == 0


def test_minimum_order_total(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    service.update_earning_settings(
        session,
        changes={"minimum_order_total": 2500, "minimum_order_currency": "usd"},
        actor="manager",
    )
    mid = member()
    assert order(session, mid, 2499)["points"] == 0
    assert order(session, mid, 2500)["points"] == 25
    assert order(session, mid, 1000, currency="EUR")["points"] == 10
    with pytest.raises(InvalidFieldError):
        service.update_earning_settings(
            session, changes={"minimum_order_currency": None}, actor="manager"
        )


def test_tier_multiplier_applies_after_an_instant_upgrade(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    ladder(session)
    mid = member()
    first = order(session, mid, 10000)
    assert first["description"] == "base 100"  # a Member, not yet Gold
    assert tiers_service.current_tiers(session, [mid])[mid].code == "gold"
    second = order(session, mid, 10000)
    assert second["points"] == 125
    assert second["description"] == "base 100 + Gold x1.25 +25"


def test_campaign_window_target_and_pause(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    ladder(session)
    mid, other = member(), member()
    november = campaign(
        session,
        name="Double Points November",
        target="members",
        target_values=[mid],
        starts_at=START + DAY,
        ends_at=START + 10 * DAY,
    )
    assert order(session, mid, 1000)["points"] == 10  # not started yet
    clock.advance(2 * DAY)
    assert order(session, mid, 1000)["points"] == 20
    assert order(session, other, 1000)["points"] == 10  # not targeted
    # An order placed before the campaign, reported during it, does not get the bonus.
    assert order(session, mid, 1000, placed_at=START)["points"] == 10
    service.update_campaign(
        session, campaign_id=november.id, changes={"active": False}, actor="manager"
    )
    assert order(session, mid, 1000)["points"] == 10
    clock.advance(20 * DAY)
    service.update_campaign(
        session, campaign_id=november.id, changes={"active": True}, actor="manager"
    )
    assert order(session, mid, 1000)["points"] == 10  # ended
    assert (
        service.campaign_status(service.get_campaign(session, november.id), clock.now()) == "ended"
    )


def test_campaign_for_a_tier_and_for_silent_members(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    ladder(session)
    campaign(
        session,
        name="Gold week",
        target="tiers",
        target_values=["gold"],
        multiplier=None,
        bonus_points=7,
    )
    campaign(session, name="We miss you", target="stages", target_values=["silent", "churned"])
    regular = member(enrolled_at=START - 400 * DAY)
    # The old order (200 points) made them Gold; they have not ordered for 300 days since.
    order(session, regular, 20000, placed_at=START - 300 * DAY, backfill=True)  # history
    comeback = order(session, regular, 1000)
    assert comeback["description"] == (
        "base 10 + Gold x1.25 +2 + Gold week +7 + We miss you x2 +10"
    )
    # Active again: the comeback campaign no longer applies.
    again = order(session, regular, 1000)
    assert again["description"] == "base 10 + Gold x1.25 +2 + Gold week +7"
    newcomer = member()
    assert order(session, newcomer, 1000)["description"] == "base 10"


def test_campaign_budget_stops_the_campaign_when_spent(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    limited = campaign(session, budget=25)
    mid = member()
    assert order(session, mid, 1000)["points"] == 20  # +10 of the budget
    assert order(session, mid, 1000)["points"] == 20  # +10
    assert order(session, mid, 1000)["points"] == 15  # the last 5
    assert order(session, mid, 1000)["points"] == 10
    refreshed = service.get_campaign(session, limited.id)
    assert refreshed.spent == 25
    assert service.campaign_status(refreshed, clock.now()) == "exhausted"
    with pytest.raises(CampaignInUseError):
        service.delete_campaign(session, campaign_id=limited.id, actor="manager")
    with pytest.raises(InvalidFieldError):
        service.update_campaign(
            session, campaign_id=limited.id, changes={"budget": 10}, actor="manager"
        )


def test_a_spent_budget_costs_no_statement_until_the_manager_raises_it(
    session: Session, engine: Engine, member: Callable[..., str], clock: FrozenClock
) -> None:
    limited = campaign(session, budget=10)
    mid = member()
    assert order(session, mid, 1000)["points"] == 20  # the whole budget
    assert order(session, mid, 1000)["points"] == 10  # found spent (its row read)
    with counting(engine) as seen:
        assert order(session, mid, 1000)["points"] == 10
    assert not [statement for statement in seen if "campaigns" in statement], seen
    service.update_campaign(
        session, campaign_id=limited.id, changes={"budget": 15}, actor="manager"
    )
    assert order(session, mid, 1000)["points"] == 15  # the 5 more
    assert service.get_campaign(session, limited.id).spent == 15


def test_a_budget_spent_by_a_transaction_that_rolled_back_is_not_remembered_spent(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    campaign(session, budget=10)
    mid = member()
    with pytest.raises(LookupError), request_transaction(session):
        assert order(session, mid, 1000)["points"] == 20  # the whole budget
        assert order(session, mid, 1000)["points"] == 10  # spent, by this transaction
        raise LookupError("the request fails: its transaction rolls back")
    assert order(session, mid, 1000)["points"] == 20


def test_an_order_a_budget_lacks_the_room_for_is_priced_again_with_the_budgets_locked(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    """The first campaign (in id order) is charged at the accrual's commit, the second lacks
    the room: the accrual runs again, charging the second's budget as it prices (the
    process now knows it is tight). The first is charged, the second lacks the room: both
    rows are then read locked, the first's spend without the charge, and the order priced
    again."""
    first, second = sorted(
        (campaign(session, name="One", budget=100), campaign(session, name="Two", budget=100)),
        key=lambda row: row.id,
    )
    service.update_campaign(session, campaign_id=second.id, changes={"budget": 14}, actor="m")
    mid = member()
    assert order(session, mid, 1000)["points"] == 10 + 10 + 10
    with counting(session.get_bind()) as seen:
        points = order(session, mid, 1000)
    assert points["points"] == 10 + 10 + 4, points
    assert service.get_campaign(session, first.id).spent == 20
    assert service.get_campaign(session, second.id).spent == 14
    charges = [statement for statement in seen if "campaigns" in statement]
    # At the commit: charged, missed (rolled back). Run again: charged, missed, read
    # locked, the second's spend written (the first's is as charged).
    verbs = [statement.split()[0] for statement in charges]
    assert verbs == ["UPDATE", "UPDATE", "UPDATE", "UPDATE", "SELECT", "UPDATE"], charges
    assert "FOR UPDATE" in charges[4], charges[4]
    assert order(session, mid, 1000)["points"] == 20  # the second is spent


def test_a_campaign_paused_after_the_order_read_the_rules_gives_nothing(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    limited = campaign(session, budget=100)
    mid = member()
    assert order(session, mid, 1000)["points"] == 20  # the rules are in the process's cache
    # Paused by a transaction whose configuration change the cache has not seen (it commits
    # between the order's read of the rules and the budget's charge).
    session.execute(update(Campaign).where(Campaign.id == limited.id).values(active=False))
    session.commit()
    assert order(session, mid, 1000)["points"] == 10
    session.expire_all()
    assert service.get_campaign(session, limited.id).spent == 10


def test_daily_and_monthly_caps_in_the_members_time_zone(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    service.update_earning_settings(
        session, changes={"daily_cap": 150, "monthly_cap": 400}, actor="manager"
    )
    # 12:00 UTC is 21:00 in Tokyo; the member's day ends at 15:00 UTC.
    mid = member(timezone="Asia/Tokyo")
    assert order(session, mid, 10000)["points"] == 100
    capped = order(session, mid, 10000)
    assert capped["points"] == 50
    assert capped["description"] == "base 100 + daily cap -50"
    assert order(session, mid, 10000)["points"] == 0
    clock.advance(dt.timedelta(hours=3, minutes=1))  # a new day in Tokyo
    assert order(session, mid, 10000)["points"] == 100
    for _ in range(3):
        clock.advance(DAY)
        order(session, mid, 10000)
    assert ledger_service.get_balance(session, mid).pending == 400  # the monthly cap
    clock.advance(30 * DAY)  # April in Tokyo
    assert order(session, mid, 10000)["points"] == 100


def test_preview_writes_nothing_and_matches_the_order(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    limited = campaign(session, budget=1000)
    service.create_multiplier(
        session, scope="sku", match="boot", multiplier=Decimal(3), label="Boot bonanza", actor="m"
    )
    mid = member()
    items = ITEMS[:1]
    preview = service.preview_order(session, member_id=mid, total=8000, currency="usd", items=items)
    assert preview.points == 80 + 160 + 80
    assert preview.line_points == [320]
    assert service.get_campaign(session, limited.id).spent == 0
    assert ledger_service.get_balance(session, mid).pending == 0
    real = order(session, mid, 8000, items=items)
    assert real["points"] == preview.points
    assert real["description"] == preview.describe()
    with pytest.raises(MemberNotFoundError):
        service.preview_order(session, member_id="mem_nope", total=1, currency="USD")
    with pytest.raises(InvalidFieldError):
        service.preview_order(session, member_id=mid, total=1, currency="XYZ")


def test_configuration_is_validated_and_audited(session: Session, clock: FrozenClock) -> None:
    created = service.create_multiplier(
        session, scope="category", match="shoes", multiplier=Decimal(2), actor="alice"
    )
    with pytest.raises(MultiplierConflictError):
        service.create_multiplier(
            session, scope="category", match="shoes", multiplier=Decimal(3), actor="alice"
        )
    service.update_multiplier(
        session, multiplier_id=created.id, changes={"multiplier": Decimal(3)}, actor="bob"
    )
    service.delete_multiplier(session, multiplier_id=created.id, actor="carol")
    with pytest.raises(InvalidFieldError):
        campaign(session, target="tiers", target_values=["platinum"])
    with pytest.raises(InvalidFieldError):
        campaign(session, target="stages", target_values=["sleepy"])
    with pytest.raises(InvalidFieldError):
        campaign(session, ends_at=START - 2 * DAY)
    with pytest.raises(InvalidFieldError):
        campaign(session, multiplier=None)
    with pytest.raises(InvalidFieldError):
        campaign(session, target="members", target_values=["mem_nobody"])
    records = audit_service.list_records(session, entity_type="multiplier").items
    assert [(r.action, r.actor) for r in records] == [
        ("deleted", "carol"),
        ("updated", "bob"),
        ("created", "alice"),
    ]
    assert records[1].before == {
        "scope": "category",
        "match": "shoes",
        "multiplier": "2.0000",
        "label": None,
    }
    assert records[1].after is not None and records[1].after["multiplier"] == "3.0000"
    assert records[0].after is None


def test_a_refunded_order_frees_its_room_under_the_cap(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    service.update_earning_settings(session, changes={"daily_cap": 100}, actor="manager")
    mid = member()
    assert order(session, mid, 10000, order_id="o-capped")["points"] == 100
    assert order(session, mid, 10000)["points"] == 0
    ledger_service.refund_order(
        session, client_id="cli_test", order_id="o-capped", refund_id="r-1", amount=10000
    )
    assert order(session, mid, 10000)["points"] == 100
