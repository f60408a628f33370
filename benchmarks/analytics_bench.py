"""Time every analytics call against a plain count(*) of the same tables, in the same run.

    python benchmarks/analytics_data.py       # first: load loyalty_bench_analytics
    python benchmarks/analytics_bench.py      # --repeat 3 --json FILE

Against the database `analytics_data.py` loaded, with the app in this process (Flask's test
client, no HTTP server): first the worker's daily pass (stages, RFM, churn flags, the cohort
activity, the order facts, alerts) once, timed (``--refresh``: then an incremental refresh of
the cohort activity and of the order facts, the next day's share; ``--only-facts``: of the
pass only the order facts, for a database whose stages and cohort activity are built); then
the baseline, ``SELECT count(*)`` of members, orders, ledger_entries,
redemptions and community_events one after the other; then each analytics call. Each is run
``--repeat`` times and the median kept; the ratio is the call's median over the baseline's.
Goal: at most 10. Prints a Markdown table (and writes the figures as JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loyalty import clock, create_app  # noqa: E402
from loyalty.analytics import service as analytics  # noqa: E402
from loyalty.auth import service as auth  # noqa: E402
from loyalty.auth.rules import SCOPES  # noqa: E402
from loyalty.db import get_database  # noqa: E402
from loyalty.earning import service as earning  # noqa: E402

TABLES = ("members", "orders", "ledger_entries", "redemptions", "community_events")
SECRET = "benchmark-secret-key-that-is-long-enough-0123456789"


def median_seconds(work: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="loyalty_bench_analytics")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-worker", action="store_true", help="stages already computed")
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="time an incremental refresh of the cohort activity and the order facts",
    )
    parser.add_argument(
        "--only-facts",
        action="store_true",
        help="of the worker's pass only the order facts (the rest already built)",
    )
    parser.add_argument(
        "--skip", action="append", default=[], help="leave out calls whose label contains this"
    )
    parser.add_argument(
        "--only", action="append", default=[], help="only the calls whose label contains this"
    )
    args = parser.parse_args(argv)
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{args.database}"
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": SECRET})
    with app.app_context():
        session = get_database(app).sessionmaker()
        sizes = {t: session.scalar(text(f"SELECT count(*) FROM {t}")) for t in TABLES}
        print("sizes:", json.dumps(sizes), flush=True)
        results: dict[str, Any] = {"sizes": sizes}
        if args.only_facts:
            started = time.perf_counter()
            counts = analytics.refresh_order_facts(session)
            seconds = time.perf_counter() - started
            results["order_facts"] = {"seconds": round(seconds, 1), "counts": counts}
            print(f"order facts: {seconds:.1f} s {counts}", flush=True)
        elif not args.skip_worker:
            started = time.perf_counter()
            counts = analytics.recompute(session, batch_size=analytics.RECOMPUTE_BATCH)
            stages = time.perf_counter() - started
            counts.update(analytics.refresh_cohort_activity(session))
            activity = time.perf_counter() - started - stages
            counts.update(analytics.refresh_order_facts(session))
            facts = time.perf_counter() - started - stages - activity
            counts["retention alerts"] = analytics.check_retention(session)
            worker = time.perf_counter() - started
            results["worker"] = {
                "seconds": round(worker, 1),
                "stages_seconds": round(stages, 1),
                "cohort_activity_seconds": round(activity, 1),
                "order_facts_seconds": round(facts, 1),
                "counts": counts,
            }
            print(
                f"worker pass: {worker:.1f} s (stages {stages:.1f} s, cohort activity "
                f"{activity:.1f} s, order facts {facts:.1f} s) {counts}",
                flush=True,
            )
        if args.refresh:
            # The next day's pass: only what changed since (here nothing but the clock).
            for name, refresh in (
                ("cohort activity", analytics.refresh_cohort_activity),
                ("order facts", analytics.refresh_order_facts),
            ):
                started = time.perf_counter()
                counts = refresh(session)
                seconds = time.perf_counter() - started
                results[f"{name.replace(' ', '_')}_refresh"] = {
                    "seconds": round(seconds, 1),
                    "counts": counts,
                }
                print(f"{name} refresh: {seconds:.1f} s {counts}", flush=True)
        now = clock.now()
        campaign = earning.create_campaign(
            session,
            actor="bench",
            name="Bench double points",
            starts_at=now - dt.timedelta(days=30),
            ends_at=now + dt.timedelta(days=1),
            multiplier="2",
            holdout_pct=10,
        )
        campaign_id = campaign.id
        client = auth.create_client(session, name="analytics bench", scopes=SCOPES)
        token = auth.issue_token(
            session, client_id=client.client.id, client_secret=client.secret
        ).access_token
        session.close()

        def baseline() -> None:
            with get_database(app).engine.connect() as connection:
                for table in TABLES:
                    connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()

        base = median_seconds(baseline, args.repeat)
        print(f"baseline count(*) of {', '.join(TABLES)}: {base:.3f} s", flush=True)
        http = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        year_ago = (now - dt.timedelta(days=365)).date().isoformat()
        five_years = (now - dt.timedelta(days=5 * 365)).date().isoformat()
        calls = [
            ("GET", "/v1/analytics/cohorts", None),
            ("GET", f"/v1/analytics/cohorts?from={five_years}&months=60", None),
            ("GET", "/v1/analytics/cohorts?basis=first_order", None),
            ("GET", "/v1/analytics/repurchase", None),
            ("GET", f"/v1/analytics/repurchase?from={year_ago}", None),
            ("GET", "/v1/analytics/ltv", None),
            ("GET", "/v1/analytics/segments", None),
            ("GET", "/v1/analytics/at-risk", None),
            ("GET", "/v1/analytics/nps", None),
            ("GET", f"/v1/analytics/campaigns/{campaign_id}/uplift", None),
            ("GET", "/v1/analytics/kpis", None),
            ("GET", f"/v1/analytics/kpis?from={year_ago}", None),
            ("GET", "/v1/analytics/liability", None),
            ("GET", "/v1/analytics/alerts", None),
            ("POST", "/v1/analytics/tier-what-if", {}),
            ("GET", "/v1/analytics/at-risk", "csv"),
        ]
        rows = []
        for method, path, body in calls:
            if any(part in path for part in args.skip):
                continue
            if args.only and not any(part in path for part in args.only):
                continue

            def call(method: str = method, path: str = path, body: Any = body) -> None:
                if body == "csv":
                    answer = http.get(path, headers={**headers, "Accept": "text/csv"})
                    answer.get_data()
                elif method == "POST":
                    answer = http.post(path, json=body, headers=headers)
                else:
                    answer = http.get(path, headers=headers)
                if answer.status_code != 200:
                    raise RuntimeError(
                        f"{method} {path}: {answer.status_code} {answer.data[:300]!r}"
                    )

            seconds = median_seconds(call, args.repeat)
            label = f"{method} {path.split('?')[0].replace(campaign_id, '{id}')}"
            if "?" in path:
                label += "?" + path.split("?", 1)[1].replace(five_years, "5y").replace(
                    year_ago, "1y"
                )
            if body == "csv":
                label += " (CSV)"
            rows.append(
                {"call": label, "seconds": round(seconds, 3), "ratio": round(seconds / base, 2)}
            )
            print(f"{label}: {seconds:.3f} s, {seconds / base:.2f} x count(*)", flush=True)
        results["baseline_seconds"] = round(base, 3)
        results["calls"] = rows
    print()
    print(f"| call | median s | x count(*) ({base:.3f} s) |")
    print("|---|---|---|")
    for row in rows:
        print(f"| `{row['call']}` | {row['seconds']} | {row['ratio']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
