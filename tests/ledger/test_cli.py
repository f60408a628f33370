"""``loyalty jobs run`` and ``loyalty ledger verify``."""

from __future__ import annotations

import datetime as dt

from flask import Flask
from sqlalchemy import text
from sqlalchemy.orm import Session

from loyalty.cli import main
from loyalty.clock import FrozenClock
from loyalty.ledger import service
from loyalty.members import service as members_service


def test_jobs_run_once_settles_what_is_due(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    ids = []
    for i in range(3):
        member, _ = members_service.enroll_member(session, external_id=f"j{i}")
        service.accrue_order(
            session,
            client_id="c",
            order_id=f"o{i}",
            member_id=member.id,
            total=1000,
            currency="USD",
        )
        ids.append(member.id)
    runner = app.test_cli_runner()
    result = runner.invoke(main, ["jobs", "run", "--once"])
    assert result.exit_code == 0, result.output
    assert "Settled 0 wallet(s)" in result.output

    clock.advance(dt.timedelta(days=15))
    result = runner.invoke(main, ["jobs", "run", "--once", "--batch-size", "2", "--progress"])
    assert result.exit_code == 0, result.output
    assert "Settled 3 wallet(s)" in result.output
    assert "Settling wallets" in result.output
    for member_id in ids:
        assert service.get_balance(session, member_id).available == 10


def test_verify_is_clean_and_reports_corruption(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    member, _ = members_service.enroll_member(session, external_id="v")
    service.adjust(session, member_id=member.id, points=10, reason="seed")
    runner = app.test_cli_runner()
    result = runner.invoke(main, ["ledger", "verify"])
    assert result.exit_code == 0, result.output
    assert "every invariant holds" in result.output

    with session.begin_nested():
        session.execute(text("UPDATE wallets SET available = 11, updated_at = now()"))
    result = runner.invoke(main, ["ledger", "verify"])
    assert result.exit_code == 1
    assert "invariant 1" in result.output and "invariant 2" in result.output
    assert "available 11" in result.output
    session.rollback()
