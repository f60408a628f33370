"""`loyalty import orders|refunds`: history older than the API accepts, from CSV or JSON
Lines, through the ledger's rules; safe to run again; bad rows reported by line."""

from __future__ import annotations

import json
from pathlib import Path

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.cli import main
from loyalty.clock import FrozenClock
from loyalty.ledger import service as ledger
from loyalty.ledger.invariants import verify
from loyalty.ledger.models import Order, Refund
from loyalty.members import service as members_service


def test_history_imports_once_and_reports_bad_rows(
    app: Flask, session: Session, clock: FrozenClock, tmp_path: Path
) -> None:
    ada, _ = members_service.enroll_member(session, external_id="ada")
    bob, _ = members_service.enroll_member(session, external_id="bob")
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "order_id,external_id,member_id,total,currency,placed_at,note\n"
        f"H-1,ada,,12000,USD,2024-05-01T10:00:00Z,first\n"
        f"H-2,,{bob.id},5000,EUR,2025-12-24T18:00:00+01:00,\n"
        "H-3,nobody,,100,USD,2025-01-01T00:00:00Z,\n"
        "H-4,ada,,abc,USD,2025-01-01T00:00:00Z,\n"
        "H-5,ada,,100,USD,2030-01-01T00:00:00Z,\n"
        "H-6,ada,,100,USD,,\n"
    )
    runner = app.test_cli_runner()
    first = runner.invoke(main, ["import", "orders", str(orders)])
    assert first.exit_code == 1
    assert "Imported 2 orders; 0 were already recorded; 4 failed." in first.output
    for line, reason in (
        (4, "no member with this external_id"),
        (5, "total"),
        (6, "order-in-future"),
        (7, "placed_at"),
    ):
        assert any(
            text.startswith(f"line {line}:") and reason in text
            for text in first.output.splitlines()
        ), first.output
    again = runner.invoke(main, ["import", "orders", str(orders)])
    assert "Imported 0 orders; 2 were already recorded; 4 failed." in again.output
    assert session.scalar(select(func.count()).select_from(Order)) == 2

    # Valid 36 months from activation (the default), both are still spendable.
    assert ledger.get_balance(session, ada.id).available == 120
    assert ledger.get_balance(session, bob.id).available == 50

    refunds = tmp_path / "refunds.jsonl"
    refunds.write_text(
        json.dumps({"order_id": "H-1", "refund_id": "HR-1", "amount": 6000})
        + "\n\n"
        + json.dumps({"order_id": "H-9", "refund_id": "HR-2", "amount": 1})
        + "\nnot json\n"
    )
    result = runner.invoke(main, ["import", "refunds", str(refunds)])
    assert "Imported 1 refunds; 0 were already recorded; 2 failed." in result.output
    assert "line 3: order-not-found" in result.output
    assert "line 4: not a JSON object" in result.output
    assert session.scalar(select(func.count()).select_from(Refund)) == 1
    assert ledger.get_balance(session, ada.id).available == 60
    assert verify(session) == []


def test_imports_name_a_channel(app: Flask, session: Session, tmp_path: Path) -> None:
    orders = tmp_path / "orders.jsonl"
    orders.write_text("")
    result = app.test_cli_runner().invoke(
        main, ["import", "orders", str(orders), "--channel", "chn_nope"]
    )
    assert result.exit_code != 0
    assert "No channel" in result.output
