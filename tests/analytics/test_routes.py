"""The analytics API: every path answers JSON and, with ``Accept: text/csv``, the same figures
as CSV; scopes, bad input and unknown ids give problems; the settings round-trip."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from loyalty.analytics import service
from loyalty.analytics.export import flatten
from loyalty.clock import FrozenClock
from tests.analytics.conftest import NOW, build, event

CSV = {"Accept": "text/csv"}
REPORTS = (
    "/v1/analytics/cohorts?from=2024-01-01&months=3",
    "/v1/analytics/repurchase?from=2026-01-01",
    "/v1/analytics/ltv",
    "/v1/analytics/segments",
    "/v1/analytics/at-risk",
    "/v1/analytics/nps",
    "/v1/analytics/kpis?from=2026-01-01&to=2026-06-15",
    "/v1/analytics/liability",
    "/v1/analytics/alerts",
)


def rows(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode())))


def text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@pytest.mark.parametrize("path", REPORTS)
def test_every_report_answers_json_and_csv(
    client: FlaskClient, session: Session, now: FrozenClock, headers: dict[str, str], path: str
) -> None:
    build(session)
    service.run_due(session)
    answer = client.get(path, headers=headers)
    assert answer.status_code == 200, answer.json
    assert answer.mimetype == "application/json"
    exported = client.get(path, headers={**headers, **CSV})
    assert exported.status_code == 200
    assert exported.mimetype == "text/csv"
    assert exported.headers["Content-Disposition"].startswith("attachment; filename=")
    table = rows(exported.data)
    assert table[0]


def test_figures_csv_agrees_with_json(
    client: FlaskClient, session: Session, now: FrozenClock, headers: dict[str, str]
) -> None:
    build(session)
    for path in ("/v1/analytics/repurchase?from=2026-01-01", "/v1/analytics/kpis?from=2026-01-01"):
        document = client.get(path, headers=headers).json
        table = rows(client.get(path, headers={**headers, **CSV}).data)
        assert table[0] == ["metric", "value"]
        assert dict(table[1:]) == {key: text(value) for key, value in flatten(document)}
    repurchase = dict(rows(client.get(REPORTS[1], headers={**headers, **CSV}).data)[1:])
    assert repurchase["repurchase_rate"] == "0.6667"
    assert repurchase["repurchase_72_hours.rate"] == "0.3333"
    assert repurchase["repurchase_annual.rate"] == ""  # not yet: empty, not 0


def test_cohorts_csv_has_a_row_per_cohort_agreeing_with_json(
    client: FlaskClient, session: Session, now: FrozenClock, headers: dict[str, str]
) -> None:
    build(session)
    path = "/v1/analytics/cohorts?from=2024-01-01&months=3"
    document = client.get(path, headers=headers).json
    table = rows(client.get(path, headers={**headers, **CSV}).data)
    header, *body = table
    assert [row[0] for row in body] == [c["cohort"] for c in document["cohorts"]]
    for row, cohort in zip(body, document["cohorts"], strict=True):
        record = dict(zip(header, row, strict=True))
        assert record["members"] == str(cohort["members"])
        for mark in cohort["marks"]:
            assert record[f"{mark['mark']}_rate"] == text(mark["rate"])
            assert record[f"{mark['mark']}_status"] == mark["status"]
        for cell in cohort["months"]:
            assert record[f"month_{cell['offset']}_rate"] == text(cell["rate"])
    january = dict(zip(header, body[1], strict=True))
    assert (january["cohort"], january["day_30_rate"], january["year_1_status"]) == (
        "2026-01",
        "0.5",
        "not_yet",
    )


def test_at_risk_csv_lists_every_open_flag(
    client: FlaskClient, session: Session, now: FrozenClock, headers: dict[str, str]
) -> None:
    data = build(session)
    service.run_due(session)
    page = client.get("/v1/analytics/at-risk?limit=1", headers=headers).json
    assert page is not None and len(page["items"]) == 1 and page["next_cursor"]
    rest = client.get(
        f"/v1/analytics/at-risk?limit=5&cursor={page['next_cursor']}", headers=headers
    ).json
    assert rest is not None and rest["next_cursor"] is None
    table = rows(client.get("/v1/analytics/at-risk", headers={**headers, **CSV}).data)
    listed = {row[table[0].index("member_id")] for row in table[1:]}
    assert listed == {item["member_id"] for item in page["items"] + rest["items"]}
    assert listed == {data.a, data.b, data.c}  # D churned, E is new


def test_member_analytics_and_not_found(
    client: FlaskClient, session: Session, now: FrozenClock, headers: dict[str, str]
) -> None:
    data = build(session)
    service.run_due(session)
    member = client.get(f"/v1/analytics/members/{data.a}", headers=headers).json
    assert member is not None and member["stage"] == "active" and member["risk"]["reason"]
    missing = client.get("/v1/analytics/members/mem_nobody", headers=headers)
    assert (missing.status_code, missing.json["code"]) == (404, "member-not-found")  # type: ignore[index]
    campaign = client.get("/v1/analytics/campaigns/cmp_nobody/uplift", headers=headers)
    assert campaign.status_code == 404


def test_scope_and_bad_input(
    client: FlaskClient, make_headers: Callable[..., dict[str, str]], now: FrozenClock
) -> None:
    members_only = make_headers("members:read")
    assert client.get("/v1/analytics/kpis", headers=members_only).status_code == 403
    reader = make_headers("analytics:read")
    backwards = client.get("/v1/analytics/kpis?from=2026-02-01&to=2026-01-01", headers=reader)
    assert backwards.status_code == 422
    assert backwards.json["errors"][0]["pointer"] == "#/from"  # type: ignore[index]
    assert client.get("/v1/analytics/kpis?from=2026-13-01", headers=reader).status_code == 422
    assert client.get("/v1/analytics/cohorts?basis=weekly", headers=reader).status_code == 422
    assert client.get("/v1/analytics/cohorts?months=61", headers=reader).status_code == 422
    what_if = client.post(
        "/v1/analytics/tier-what-if", json={"thresholds": {"nope": 1}}, headers=reader
    )
    assert what_if.status_code == 422
    assert client.post("/v1/analytics/tier-what-if", json={}, headers=reader).status_code == 200


def test_settings_round_trip(
    client: FlaskClient, make_headers: Callable[..., dict[str, str]], now: FrozenClock
) -> None:
    writer = make_headers("program:read", "program:write")
    got = client.get("/v1/program/analytics", headers=writer).json
    assert got is not None
    assert (got["new_days"], got["active_days"], got["silent_days"], got["currency"]) == (
        30,
        90,
        180,
        "USD",
    )
    changed = client.patch(
        "/v1/program/analytics",
        json={"active_days": 60, "cost_per_point": "0.005", "currency": "eur"},
        headers=writer,
    )
    assert changed.status_code == 200, changed.json
    assert (changed.json["active_days"], changed.json["currency"]) == (60, "EUR")  # type: ignore[index]
    assert changed.json["cost_per_point"] == "0.005000"  # type: ignore[index]
    refused = client.patch("/v1/program/analytics", json={"silent_days": 60}, headers=writer)
    assert refused.status_code == 422
    assert refused.json["errors"][0]["pointer"] == "#/silent_days"  # type: ignore[index]
    assert (
        client.patch("/v1/program/analytics", json={"new_days": 0}, headers=writer).status_code
        == 422
    )


def test_nps_answers_are_checked(
    client: FlaskClient, session: Session, now: FrozenClock, headers: dict[str, str]
) -> None:
    data = build(session)
    body = {
        "event_id": "n-1",
        "member_id": data.a,
        "type": "nps.responded",
        "occurred_at": "2026-06-15T11:00:00Z",
    }
    too_high = client.post(
        "/v1/events", json={**body, "properties": {"score": 11}}, headers=headers
    )
    assert too_high.status_code == 422, too_high.json
    assert too_high.json["errors"][0]["pointer"] == "#/properties/score"  # type: ignore[index]
    answered = client.post(
        "/v1/events", json={**body, "properties": {"score": 9, "comment": "Fast"}}, headers=headers
    )
    assert answered.status_code == 201
    nps = client.get("/v1/analytics/nps", headers=headers).json
    assert nps is not None and (nps["responses"], nps["nps"]) == (1, 100.0)
    event(session, data.b, "n-2", "nps.responded", NOW, score=0)
