"""The analytics end to end on PostgreSQL and on SQLite: the same fixed dataset gives the
same hand-computed figures through the API (SQLite has no time zones of its own: the member's
local day comes from a function the analytics registers)."""

from __future__ import annotations

from flask import Flask

from loyalty.analytics import service
from loyalty.auth.rules import SCOPES
from loyalty.clock import FrozenClock, use_clock
from loyalty.db import get_database
from tests.analytics.conftest import NOW, build
from tests.conftest import bearer_headers


def test_analytics_on_both_backends(e2e_app: Flask) -> None:
    use_clock(e2e_app, FrozenClock(NOW))
    try:
        with e2e_app.app_context():
            session = get_database(e2e_app).sessionmaker()
            try:
                data = build(session)
                counts = service.run_due(session)
            finally:
                session.close()
        assert counts["stages computed"] == 5
        auth = bearer_headers(e2e_app, SCOPES)
        http = e2e_app.test_client()
        cohorts = http.get("/v1/analytics/cohorts?from=2024-01-01&months=6", headers=auth).json
        assert cohorts is not None
        found = {
            c["cohort"]: {
                m["mark"]: (m["eligible"], m["retained"], m["status"]) for m in c["marks"]
            }
            for c in cohorts["cohorts"]
        }
        assert sorted(found) == ["2024-02", "2026-01", "2026-02", "2026-06"]
        assert found["2026-01"]["day_90"] == (2, 1, "complete")
        assert found["2026-02"]["day_7"] == (1, 1, "complete")  # Tokyo: day 2, not day 1
        assert found["2024-02"]["year_1"] == (1, 1, "complete")  # the leap day cohort
        assert found["2026-06"]["day_30"] == (0, 0, "not_yet")
        repurchase = http.get("/v1/analytics/repurchase?from=2026-01-01", headers=auth).json
        assert repurchase is not None
        assert (repurchase["repurchase_rate"], repurchase["revenue"]) == (0.6667, 23000)
        assert repurchase["repurchase_72_hours"]["rate"] == 0.3333
        kpis = http.get("/v1/analytics/kpis?from=2026-01-01", headers=auth).json
        assert kpis is not None and kpis["points"]["outstanding"]["points"] == 240
        segments = http.get("/v1/analytics/segments", headers=auth).json
        assert segments is not None
        assert {s["stage"]: s["members"] for s in segments["stages"]} == {
            "new": 1,
            "active": 1,
            "silent": 2,
            "churned": 1,
        }
        at_risk = http.get("/v1/analytics/at-risk", headers=auth).json
        assert at_risk is not None and at_risk["open"] == 3
        ltv = http.get("/v1/analytics/ltv", headers=auth).json
        assert ltv is not None and ltv["revenue_per_member"] == 4800.0
        assert http.get(f"/v1/analytics/members/{data.e}", headers=auth).json["stage"] == "new"  # type: ignore[index]
        assert http.get("/v1/analytics/liability", headers=auth).status_code == 200
        assert http.get("/v1/analytics/nps", headers=auth).status_code == 200
        assert http.post("/v1/analytics/tier-what-if", json={}, headers=auth).status_code == 200
    finally:
        use_clock(e2e_app, None)
