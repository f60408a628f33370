"""A budgeted campaign's charge waits for the accrual's commit: the campaign's row, which every
order it applies to must lock to charge it, is held for the commit only, not from pricing on
(the orders of a running campaign otherwise queued for it through each other's writes, badges
and tier moves). Budgets stay exact: a charge that finds the room gone at the commit runs the
accrual again, charging that budget as it prices."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.earning import service
from loyalty.earning.models import Campaign
from loyalty.ledger import service as ledger_service
from loyalty.members import service as members_service
from tests.campaign_charge.helpers import accrue, stopped_at
from tests.earning.test_concurrency import double_points
from tests.support import in_thread, wait_for

pytestmark = pytest.mark.concurrency


def test_an_order_of_a_campaign_does_not_wait_for_anothers_writes(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """One order of the campaign is stopped at its write, priced with the campaign's points;
    another member's order of the campaign goes through meanwhile (before, it waited there
    for the first's lock on the campaign's row, taken when the first was priced)."""
    setup = new_session()
    campaign_id = double_points(setup, clock, "Double", 1000)
    first, second = (
        members_service.enroll_member(setup, external_id=name)[0].id for name in ("c1", "c2")
    )
    setup.close()
    held = new_session()
    there, go = stopped_at(held, "INSERT INTO orders")
    thread, outcome = in_thread(app, lambda: accrue(held, first, "c-1", 10000))
    try:
        assert there.wait(30), "the first order never reached its write"
        other = new_session()
        done, result = in_thread(app, lambda: accrue(other, second, "c-2", 10000))
        wait_for(lambda: not done.is_alive(), "the second order, while the first is stopped")
        assert result == [200]
    finally:
        go.set()
        thread.join()
    assert outcome == [200]
    check = new_session()
    assert check.get(Campaign, campaign_id).spent == 200  # type: ignore[union-attr]


def test_a_budget_spent_before_the_commit_runs_the_accrual_again(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """The first order is priced with the campaign's points (its budget has the room) and
    stopped before its commit; another order spends the budget meanwhile. At the commit the
    first's charge finds no room: the accrual is run again, its budget charged as it is
    priced, and the order gets what is left (nothing), written once."""
    setup = new_session()
    campaign_id = double_points(setup, clock, "Short", 100)
    first, second = (
        members_service.enroll_member(setup, external_id=name)[0].id for name in ("s1", "s2")
    )
    setup.close()
    held = new_session()
    there, go = stopped_at(held, "UPDATE campaigns")
    thread, outcome = in_thread(app, lambda: accrue(held, first, "s-1", 10000))
    try:
        assert there.wait(30), "the first order never reached its charge"
        assert accrue(new_session(), second, "s-2", 10000) == 200  # the whole budget
    finally:
        go.set()
        thread.join()
    assert outcome == [100]  # run again: the budget was spent
    check = new_session()
    assert check.get(Campaign, campaign_id).spent == 100  # type: ignore[union-attr]
    assert ledger_service.get_balance(check, first).pending == 100
    assert service.preview_order(check, member_id=first, total=10000, currency="USD").points == 100
