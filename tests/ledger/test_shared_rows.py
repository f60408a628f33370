"""What an accrual locks besides its member's own rows: with the demo programme, an order that
upgrades its member's tier, earns a badge and a budgeted campaign's points holds no row other
members' orders need exclusively, except the campaign's (its budget is charged by one order at
a time). Found by a tier held FOR NO KEY UPDATE where a key share was meant: every member's
move into that tier waited for the previous one's commit."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from loyalty.db import get_database
from loyalty.ledger import service
from loyalty.members import service as members_service
from tests.ledger.conftest import CLIENT
from tests.support import held_at_commit

pytestmark = pytest.mark.concurrency

# Rows that belong to a member (or to one order, event or request): an accrual may lock its
# own. Every other table holds rows that members share: configuration, channels, clients.
MEMBERS_OWN = {
    "allocations",
    "audit_records",
    "badge_awards",
    "badge_progress",
    "cohort_activity",
    "cohort_activity_state",
    "community_events",
    "holds",
    "idempotency_keys",
    "leaderboard_profiles",
    "ledger_entries",
    "lifecycle_marks",
    "lifecycle_sent",
    "lots",
    "member_stage_history",
    "member_stages",
    "member_streaks",
    "member_tiers",
    "members",
    "order_facts",
    "order_facts_state",
    "orders",
    "outbox_events",
    "perk_grants",
    "redemptions",
    "referrals",
    "refunds",
    "retention_alerts",
    "reward_claims",
    "risk_flags",
    "stripe_customers",
    "stripe_events",
    "stripe_payments",
    "stripe_promotion_codes",
    "stripe_refunds",
    "stripe_subscriptions",
    "tier_history",
    "wallets",
    "webhook_attempts",
    "webhook_deliveries",
}
# Charged by one order at a time (`loyalty.earning.service._charge`).
BUDGETS = {"campaigns"}


def test_an_accrual_locks_no_shared_row_but_a_budget(
    app: Flask, new_session: Callable[[], Session], programme: None
) -> None:
    session = new_session()
    member, _ = members_service.enroll_member(session, external_id="sharing")

    def order(s: Session, order_id: str, total: int) -> service.Replayable:
        return service.accrue_order(
            s,
            client_id=CLIENT,
            order_id=order_id,
            member_id=member.id,
            total=total,
            currency="USD",
        )

    order(session, "warm", 80000)  # 800 points: gold, and the campaign's members' tier
    holder, held, release = held_at_commit(
        app,
        new_session(),
        lambda s: order(s, "big", 150000),  # platinum, a spend badge
    )
    shared = sorted(
        set(inspect(get_database(app).engine).get_table_names())
        - MEMBERS_OWN
        - BUDGETS
        - {"alembic_version"}
    )
    locked = []
    probe = new_session()
    try:
        for table in shared:
            try:
                with probe.begin():
                    probe.execute(text("SET LOCAL lock_timeout = '100ms'"))
                    probe.execute(text(f"SELECT 1 FROM {table} FOR SHARE"))
            except OperationalError:
                locked.append(table)
    finally:
        probe.close()
        release.set()
        holder.join()
    result = held[0]
    assert isinstance(result, service.Replayable), result
    assert "Double Points" in result.body["description"], result.body  # the campaign applied
    assert locked == [], f"an accrual holds shared rows of {locked}"
    assert "tiers" in shared and "badges" in shared and "program_settings" in shared
