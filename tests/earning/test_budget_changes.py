"""The budget charge returning the campaign's budget, with two budgeted
campaigns and one of them (the first or the second in id order) given another budget by a
manager while the order is in flight (its rules read before the change committed): the
order gives what the committed rows allow, and each campaign is charged what it gives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import request_transaction
from loyalty.earning import service
from loyalty.earning.models import Campaign
from loyalty.ledger import service as ledger_service
from loyalty.members import service as members_service
from tests.earning.test_concurrency import double_points
from tests.ledger.conftest import CLIENT
from tests.support import behind_a_lock

pytestmark = pytest.mark.concurrency


@pytest.mark.parametrize("outer", [False, True], ids=["alone", "in-request"])
@pytest.mark.parametrize("which", ["first", "second"])
@pytest.mark.parametrize(
    ("budget", "room"),
    [(100, 50), (7, 7), (10, 10), (None, 50)],
    ids=["up", "down", "same", "none"],
)
def test_one_of_two_budgets_changed_behind_the_order(
    app: Flask,
    new_session: Callable[[], Session],
    clock: FrozenClock,
    which: str,
    budget: int | None,
    room: int,
    outer: bool,
) -> None:
    session = new_session()
    ids = sorted([double_points(session, clock, "A", 10), double_points(session, clock, "B", 10)])
    member_id = members_service.enroll_member(session, external_id="two")[0].id
    preview = service.preview_order(session, member_id=member_id, total=5000, currency="USD")
    base = 50
    assert preview.points == base + 10 + 10  # the two campaigns add up
    session.commit()
    changed_id = ids[0] if which == "first" else ids[1]
    other_id = ids[1] if which == "first" else ids[0]

    def change(s: Session) -> Any:
        return service.update_campaign(
            s, campaign_id=changed_id, changes={"budget": budget}, actor="manager"
        )

    def accrue(s: Session) -> Any:
        if outer:  # as with an Idempotency-Key: the accrual is a savepoint of the request's
            with request_transaction(s):
                return charge(s)
        return charge(s)

    def charge(s: Session) -> Any:
        return ledger_service.accrue_order(
            s,
            client_id=CLIENT,
            order_id="two-1",
            member_id=member_id,
            total=5000,
            currency="USD",
        ).body

    changed, body = behind_a_lock(app, new_session, change, accrue, statement_like="%campaigns%")
    assert not isinstance(changed, Exception), changed
    assert not isinstance(body, Exception), body
    credited: dict[str, int] = {}
    for part in body["breakdown"]:
        rule = str(part["rule"]).removeprefix("campaign:")
        credited[rule] = credited.get(rule, 0) + part["points"]
    check = new_session()
    rows = {c: check.get(Campaign, c) for c in ids}
    assert credited.get(changed_id, 0) == room, body
    assert credited.get(other_id, 0) == 10, body
    assert rows[other_id].spent == 10  # type: ignore[union-attr]
    assert rows[changed_id].spent == (0 if budget is None else room)  # type: ignore[union-attr]
    assert body["points"] == base + room + 10
