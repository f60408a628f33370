#!/usr/bin/env python3
"""The service's own CPU time per POST /v1/orders, measured in one process, step by step.

    python benchmarks/request_cpu.py [--orders 2000] [--members 1000]

Under load on a small machine, wall-clock profiles mix CPU work with waiting for a core. This
measures process CPU time instead (time.process_time), which other processes on the machine
hardly change: it recreates the database `loyalty_bench` as benchmarks/orders.py does, drives
the WSGI app through Flask's test client (no HTTP server, no socket to the client; the
database is the real PostgreSQL over TCP), then reports

* CPU per accrual over the whole request, and the SQL statements (round trips) per request;
* where that CPU goes: by default py-spy samples this process (on-CPU samples only) while it
  sends more orders, and benchmarks/profile_breakdown.py prints the shares by library and by
  step; `--profiler cprofile` uses cProfile with a CPU-time clock instead (exact call counts,
  but its overhead inflates code that makes many small calls, such as SQLAlchemy and PyJWT).

The first figure is always measured without a profiler attached.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orders as bench  # noqa: E402  (benchmarks/orders.py: database set-up helpers)
import profile_breakdown  # noqa: E402

# Inclusive steps, by (file suffix, function name) as cProfile names them.
STEPS = [
    ("whole request (Flask wsgi_app)", "flask/app.py", "wsgi_app"),
    ("authenticate() in all", "loyalty/auth/security.py", "authenticate"),
    ("  JWT decode + verify", "flask_jwt_extended/view_decorators.py", "verify_jwt_in_request"),
    ("  revoked-client lookup (SQL)", "loyalty/auth/service.py", "principal_for_token"),
    ("request body: webargs/marshmallow load", "webargs/core.py", "parse"),
    ("accrue_order() in all", "loyalty/ledger/service/orders.py", "accrue_order"),
    ("  Session.execute/scalar/get", "sqlalchemy/orm/session.py", "_execute_internal"),
    ("  Session.flush (INSERT/UPDATE)", "sqlalchemy/orm/session.py", "flush"),
    ("  Session.commit", "sqlalchemy/orm/session.py", "commit"),
    ("response: marshmallow dump", "marshmallow/schema.py", "dump"),
    ("SQL compile (cache misses)", "sqlalchemy/sql/elements.py", "_compile_w_cache"),
    ("pool checkout (+ pre-ping)", "sqlalchemy/pool/base.py", "_checkout"),
    ("  pre-ping", "sqlalchemy/pool/base.py", "_do_ping_w_event"),
    ("pool return (rollback/reset)", "sqlalchemy/pool/base.py", "_finalize_fairy"),
    ("psycopg Cursor.execute", "psycopg/cursor.py", "execute"),
    ("session close at teardown", "loyalty/db.py", "_close_session"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=2000, help="measured orders (2000)")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--db", default="loyalty_bench")
    parser.add_argument("--profiler", choices=("py-spy", "cprofile", "none"), default="py-spy")
    parser.add_argument(
        "--profile-out",
        default="/tmp/loyalty-request-cpu.txt",
        help="where the raw profile is kept (py-spy: text; cprofile: pstats)",
    )
    parser.add_argument("--top", type=int, default=0, help="with cprofile: print the top N")
    parser.add_argument("--experiments", default="", help="see benchmarks/experiments.py")
    parser.add_argument(
        "--programme",
        choices=("demo", "empty"),
        default="demo",
        help="demo: `loyalty demo`'s programme, orders with an item of a category (default)",
    )
    parser.add_argument(
        "--tree",
        default=str(bench.ROOT),
        help="the checkout whose `loyalty` is measured (default: this script's repository)",
    )
    args = parser.parse_args(argv)
    tree = str(Path(args.tree).resolve())
    # This process and the `loyalty` commands import `loyalty` from the tree, not from an
    # editable install elsewhere (whose migrations may differ from the tree's).
    sys.path.insert(0, tree)
    bench.TREE[0] = Path(tree)

    url = bench.database_url(args, args.db)
    env = dict(os.environ, LOYALTY_DATABASE_URL=url, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=tree)
    bench.log(f"recreating database {args.db}")
    bench.recreate_database(args, args.db)
    bench.loyalty_cli("db", "upgrade", env=env)
    if args.programme == "demo":
        instance = Path(tempfile.mkdtemp(prefix="loyalty-request-cpu-"))
        try:
            bench.seed_demo_programme(env, instance)
        finally:
            shutil.rmtree(instance, ignore_errors=True)
    client = json.loads(
        bench.loyalty_cli("clients", "create", "bench", "--all-scopes", "--json", env=env)
    )

    from sqlalchemy import event

    from loyalty import create_app
    from loyalty.db import get_database

    app = create_app({"DATABASE_URL": url, "SECRET_KEY": secrets.token_urlsafe(48)})
    if args.experiments:
        import experiments

        experiments.apply(app, experiments.parse(args.experiments))
    engine = get_database(app).engine
    statements = {"n": 0, "checkouts": 0}

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*_: Any) -> None:
        statements["n"] += 1

    @event.listens_for(engine, "checkout")
    def _checkout(*_: Any) -> None:
        statements["checkouts"] += 1

    http = app.test_client()
    credentials = {key: client[key] for key in ("client_id", "client_secret")}
    answer = http.post("/v1/auth/token", json=credentials)
    assert answer.status_code == 200, answer.text
    headers = {"Authorization": f"Bearer {answer.json['access_token']}"}
    if args.programme == "demo":  # the budgeted campaign keeps applying (as in orders.py)
        for campaign in http.get("/v1/program/campaigns", headers=headers).json["items"]:
            if campaign["multiplier"] and campaign["budget"] is not None:
                answer = http.patch(
                    f"/v1/program/campaigns/{campaign['id']}",
                    json={"budget": campaign["spent"] + bench.CAMPAIGN_ROOM},
                    headers=headers,
                )
                assert answer.status_code == 200, answer.text
    bench.log(f"enrolling {args.members} members")
    members = []
    for i in range(args.members):
        answer = http.post("/v1/members", json={"external_id": f"bench-{i:06d}"}, headers=headers)
        assert answer.status_code == 201, answer.text
        members.append(answer.json["id"])

    counter = iter(range(10**9))

    def one_order() -> None:
        n = next(counter)
        body = {
            "order_id": f"cpu-{n}",
            "member_id": members[n % len(members)],
            "total": 12345,
            "currency": "USD",
        }
        if args.programme == "demo":
            category = bench.DEMO_CATEGORIES[n % len(bench.DEMO_CATEGORIES)]
            body["items"] = [
                {
                    "sku": f"{category.upper()}-1",
                    "category": category,
                    "quantity": 1,
                    "unit_price": 12345,
                }
            ]
        answer = http.post("/v1/orders", json=body, headers=headers)
        if answer.status_code != 201:
            raise SystemExit(f"POST /v1/orders answered {answer.status_code}: {answer.text}")

    bench.log(f"warming up: {args.members} orders (one per member: creates the wallets)")
    for _ in range(args.members):
        one_order()

    bench.log(f"measuring {args.orders} orders")
    statements["n"] = statements["checkouts"] = 0
    cpu: list[float] = []
    usage_start = resource.getrusage(resource.RUSAGE_SELF)
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(args.orders):
        started = time.process_time()
        one_order()
        cpu.append(time.process_time() - started)
    wall = time.perf_counter() - wall_start
    total_cpu = time.process_time() - cpu_start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    user = usage.ru_utime - usage_start.ru_utime
    system = usage.ru_stime - usage_start.ru_stime
    switches = (usage.ru_nvcsw - usage_start.ru_nvcsw) + (usage.ru_nivcsw - usage_start.ru_nivcsw)
    per_statement = statements["n"] / args.orders
    per_checkout = statements["checkouts"] / args.orders

    print()
    print(
        f"orders                    {args.orders} sequential, one process, Flask test client, "
        f"programme {args.programme}"
        + (f"; experiments: {args.experiments}" if args.experiments else "")
    )
    print(
        f"CPU per accrual           {1000 * total_cpu / args.orders:.2f} ms "
        f"(median {1000 * statistics.median(cpu):.2f} ms, p99 "
        f"{1000 * sorted(cpu)[int(0.99 * len(cpu))]:.2f} ms)"
    )
    print(
        f"  user / kernel           {1000 * user / args.orders:.2f} ms / "
        f"{1000 * system / args.orders:.2f} ms; {switches / args.orders:.1f} context switches"
    )
    print(
        f"wall per accrual          {1000 * wall / args.orders:.2f} ms "
        f"(so {1000 * (wall - total_cpu) / args.orders:.2f} ms waiting on PostgreSQL)"
    )
    print(
        f"SQL statements / request  {per_statement:.1f} through SQLAlchemy, plus "
        f"{per_checkout:.1f} pool checkouts (each a BEGIN and a ROLLBACK or COMMIT, and a "
        "pre-ping only with LOYALTY_DATABASE_PRE_PING on)",
        flush=True,
    )

    if args.profiler == "py-spy":
        py_spy = shutil.which("py-spy")
        if py_spy is None:
            print("py-spy not found (pip install py-spy); use --profiler cprofile", file=sys.stderr)
            return 2
        bench.log(f"profiling {args.orders} more orders (py-spy, on-CPU samples)")
        sampler = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(os.getpid()),
                "--rate",
                "500",
                "--format",
                "raw",
                "--output",
                args.profile_out,
                "--duration",
                "600",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # let it attach
        for _ in range(args.orders):
            one_order()
        sampler.send_signal(signal.SIGINT)
        try:
            sampler.wait(timeout=60)
        except subprocess.TimeoutExpired:
            sampler.kill()
            sampler.wait()
        print(f"\nwhere the CPU goes (py-spy, {args.profile_out}):\n")
        profile_breakdown.main([args.profile_out])
        return 0
    if args.profiler == "none":
        return 0

    bench.log(f"profiling {args.orders} more orders (cProfile, CPU-time clock)")
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for _ in range(args.orders):
        one_order()
    profiler.disable()
    if args.profile_out:
        profiler.dump_stats(args.profile_out)  # for pstats or snakeviz
    stats = pstats.Stats(profiler)
    profiled_total = sum(row[3] for key, row in stats.stats.items() if key[2] == "one_order")  # type: ignore[attr-defined]

    print(
        f"\ninclusive CPU per step (cProfile; {1000 * profiled_total / args.orders:.2f} ms per "
        "request with the profiler on)"
    )
    for label, path, function in STEPS:
        spent = sum(
            row[3]
            for (filename, _line, name), row in stats.stats.items()  # type: ignore[attr-defined]
            if name == function and filename.endswith(path)
        )
        share = 100 * spent / profiled_total if profiled_total else 0.0
        print(f"  {share:5.1f}%  {1000 * spent / args.orders:6.3f} ms  {label}")
    if args.top:
        print()
        stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
