"""The audit trail: configuration changes recorded with who, when, before and after, in the
change's own transaction; read newest first, filtered, a page at a time."""

from __future__ import annotations

from collections.abc import Callable

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from loyalty.audit import service
from loyalty.earning import service as earning_service
from loyalty.errors import InvalidFieldError
from loyalty.ledger import service as ledger_service
from tests.test_problems import assert_problem

Headers = dict[str, str]


def test_core_settings_changes_are_audited_with_before_and_after(session: Session) -> None:
    ledger_service.update_settings(session, changes={"pending_days": 30}, actor="alice")
    ledger_service.update_settings(session, changes={"pending_days": 30}, actor="bob")  # no-op
    records = service.list_records(session, entity_type="program_settings").items
    assert len(records) == 1
    record = records[0]
    assert (record.actor, record.action, record.entity_id) == ("alice", "updated", "core")
    assert record.before is not None and record.after is not None
    assert (record.before["pending_days"], record.after["pending_days"]) == (14, 30)
    assert record.before["earn_rate"] == "1.0000"


def test_a_failed_change_leaves_no_audit_record(session: Session) -> None:
    try:
        earning_service.update_earning_settings(
            session, changes={"minimum_order_total": 100}, actor="alice"
        )
    except InvalidFieldError:
        pass
    assert service.list_records(session).items == []


def test_audit_over_http_filters_and_pages(
    client: FlaskClient, make_headers: Callable[..., Headers]
) -> None:
    writer = make_headers("program:write", "program:read")
    for days in (20, 21, 22):
        response = client.patch("/v1/program/settings", json={"pending_days": days}, headers=writer)
        assert response.status_code == 200
    first = client.get("/v1/audit?limit=2", headers=writer)
    assert first.status_code == 200
    page = first.json
    assert [r["after"]["pending_days"] for r in page["items"]] == [22, 21]
    assert page["items"][0]["actor"].startswith("cli_")
    assert page["items"][0]["at"].endswith("Z")
    rest = client.get(f"/v1/audit?limit=2&cursor={page['next_cursor']}", headers=writer).json
    assert [r["after"]["pending_days"] for r in rest["items"]] == [20]
    assert rest["next_cursor"] is None
    none = client.get("/v1/audit?entity_type=campaign", headers=writer).json
    assert none["items"] == []
    assert_problem(client.get("/v1/audit?cursor=nope", headers=writer), 422, "validation-failed")
    assert_problem(
        client.get("/v1/audit", headers=make_headers("members:read")), 403, "insufficient-scope"
    )
