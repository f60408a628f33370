#!/usr/bin/env python3
"""Due-work benchmark: `loyalty jobs run`'s work (activating pending lots, expiring lots) on a
million lots, against PostgreSQL's own UPDATE of the same rows. See benchmarks/README.md.

    python benchmarks/jobs.py [--members 100000] [--lots 10] [--batch-size 50]

Steps: recreate the database `loyalty_jobs_bench`, migrate it, load members x lots with SQL
(set-based INSERT ... SELECT: members, wallets, orders, their accrual entries and lots, the
wallets' balances and the entries' running balances consistent, so `loyalty ledger verify`
passes), half of each member's lots due to expire (active, past their expiry date) and half
due to activate (pending, past their return window); verify the ledger; time the floor (the
plain `UPDATE lots` of the same rows, in a transaction rolled back); then time the job's own
code in this process (`ledger.service.settle_due_batch` in a loop, as `jobs.run_due` does,
then `jobs.run_due` once for what is left and the other areas' work), timing every
transaction (wallet locks are held for a transaction) and sampling pg_stat_activity; check
every lot was activated or expired once; verify the ledger again.

`loyalty` is imported from --tree (default: this script's repository). Exits 1 when a check
fails.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from orders import postgres_cpu  # noqa: E402  (benchmarks/orders.py: CPU of the backends)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"
POINTS = 100  # every lot's points (so the running balances are simple sums)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A step failed; the message says which."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100_000, help="members (100000)")
    parser.add_argument("--lots", type=int, default=10, help="lots per member, even (10)")
    parser.add_argument(
        "--batch-size", type=int, default=50, help="wallets per batch (50, the CLI's default)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="threads settling wallets, as `loyalty jobs run --workers N` (2: one a core)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=0,
        help="stop the job after this long and extrapolate (0: run until nothing is due)",
    )
    parser.add_argument("--tree", default=str(ROOT), help="the checkout whose loyalty is run")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--db", default="loyalty_jobs_bench")
    parser.add_argument(
        "--profile",
        metavar="N",
        type=int,
        default=0,
        help="cProfile the job and print its N most expensive functions (slows it down)",
    )
    parser.add_argument(
        "--cold-analytics",
        action="store_true",
        help="no analytics built before the job: its daily pass builds the cohort activity "
        "and order facts from scratch and every member's first stage (the default builds "
        "them as of the day before, as a programme running for a while has them)",
    )
    parser.add_argument("--skip-verify", action="store_true", help="no `ledger verify` runs")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.members <= 0 or args.lots <= 0 or args.lots % 2 or args.batch_size <= 0:
        parser.error("--members, --batch-size positive; --lots positive and even")
    if args.workers <= 0 or (args.workers > 1 and (args.max_seconds or args.profile)):
        parser.error("--workers positive; --max-seconds and --profile with --workers 1 only")
    args.tree = str(Path(args.tree).resolve())
    return args


def conninfo(args: argparse.Namespace, dbname: str) -> str:
    return f"host={HOST} port={args.pg_port} user={args.pg_user} dbname={dbname}"


def database_url(args: argparse.Namespace) -> str:
    return f"postgresql+psycopg://{args.pg_user}@{HOST}:{args.pg_port}/{args.db}"


def cli_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([args.tree, *[p for p in [env.get("PYTHONPATH")] if p]]),
        LOYALTY_DATABASE_URL=database_url(args),
        LOYALTY_SECRET_KEY=secrets.token_urlsafe(48),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("LOYALTY_DEBUG", None)
    return env


def loyalty_cli(args: argparse.Namespace, *command: str, timeout: float = 1800) -> str:
    result = subprocess.run(
        [sys.executable, "-c", "from loyalty.cli import main; main()", *command],
        cwd=args.tree,
        env=cli_env(args),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise BenchError(
            f"loyalty {' '.join(command)} exited {result.returncode}:\n"
            f"{result.stdout.strip()[-2000:]}\n{result.stderr.strip()[-2000:]}"
        )
    return result.stdout.strip()


# --- the fixture ----------------------------------------------------------------------------

# One statement per table, set-based. Member i's lots 1..H (H = lots/2) are active and past
# their expiry date (credited available 400 days ago), lots H+1..2H pending and past their
# return window (credited pending 20 days ago). Entry, order and lot n = (i-1)*L + j. Each
# wallet keeps its orders' spend (each order 100.00 USD, as many as its points) and count.
FIXTURE = """
CREATE TEMP TABLE fx AS
SELECT i, j, (i - 1) * %(lots)s + j AS n, j <= %(half)s AS expiring,
       'mem_jb' || lpad(i::text, 10, '0') AS member_id,
       'wal_jb' || lpad(i::text, 10, '0') AS wallet_id
FROM generate_series(1, %(members)s) AS i, generate_series(1, %(lots)s) AS j;

INSERT INTO members (id, external_id, timezone, marketing_consent, status, referral_code,
                     metadata, enrolled_at, created_at, updated_at)
SELECT member_id, 'jobs-' || i, 'UTC', false, 'active', 'JB' || i, '{}'::jsonb,
       %(now)s - interval '500 days', %(now)s - interval '500 days', %(now)s - interval '500 days'
FROM fx WHERE j = 1;

INSERT INTO wallets (id, member_id, available, pending, held, debt, lifetime_earned,
                     spend, order_count, last_activity_at, next_due_at, created_at, updated_at)
SELECT wallet_id, member_id, %(half)s * %(points)s, %(half)s * %(points)s, 0, 0,
       %(lots)s * %(points)s, %(lots)s * %(points)s, %(lots)s, %(now)s - interval '20 days',
       %(now)s - interval '6 days', %(now)s - interval '500 days', %(now)s - interval '20 days'
FROM fx WHERE j = 1;

INSERT INTO ledger_entries (id, wallet_id, member_id, kind, points, available_delta,
    pending_delta, held_delta, debt_delta, earned_delta, counter_account, counter_amount,
    reference_type, reference_id, reason, actor, balance_available, balance_pending,
    balance_held, created_at)
SELECT n, wallet_id, member_id, 'accrual', %(points)s,
       CASE WHEN expiring THEN %(points)s ELSE 0 END,
       CASE WHEN expiring THEN 0 ELSE %(points)s END,
       0, 0, %(points)s, 'issuance', -%(points)s, 'order', 'jobs-' || n, 'jobs benchmark',
       'bench', %(points)s * least(j, %(half)s), %(points)s * greatest(j - %(half)s, 0), 0,
       CASE WHEN expiring THEN %(now)s - interval '400 days'
            ELSE %(now)s - interval '20 days' END + j * interval '1 second'
FROM fx;

INSERT INTO orders (id, channel_id, client_id, order_id, member_id, wallet_id, total, currency,
    items, placed_at, points, points_reversed, amount_refunded, activates_at, entry_id,
    request_hash, response, created_at, breakdown)
SELECT 'ord_jb' || lpad(n::text, 12, '0'), 'chn_default', 'jobs-bench', 'jobs-' || n,
       fx.member_id, fx.wallet_id, %(points)s * 100, 'USD', '[]'::jsonb,
       e.created_at, %(points)s, 0, 0, e.created_at + interval '14 days', n,
       md5(n::text), '{}'::jsonb, e.created_at, '[]'::jsonb
FROM fx JOIN ledger_entries e ON e.id = fx.n;

INSERT INTO lots (id, wallet_id, entry_id, order_pk, amount, remaining, activates_at,
                  activated_at, expires_at, expired_at, created_at)
SELECT n, fx.wallet_id, n, 'ord_jb' || lpad(n::text, 12, '0'), %(points)s, %(points)s,
       CASE WHEN expiring THEN e.created_at
            ELSE %(now)s - interval '6 days' + j * interval '1 second' END,
       CASE WHEN expiring THEN e.created_at END,
       CASE WHEN expiring THEN %(now)s - interval '1 day' + j * interval '1 second'
            ELSE %(now)s + interval '3 years' END,
       NULL, e.created_at
FROM fx JOIN ledger_entries e ON e.id = fx.n;

SELECT setval('ledger_entries_id_seq', (SELECT max(id) FROM ledger_entries));
SELECT setval('lots_id_seq', (SELECT max(id) FROM lots));
"""


def load_fixture(args: argparse.Namespace) -> float:
    """Recreate and migrate the database, then load the lots; returns the load's seconds."""
    with psycopg.connect(conninfo(args, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.db}"')
    loyalty_cli(args, "db", "upgrade")
    params = {
        "members": args.members,
        "lots": args.lots,
        "half": args.lots // 2,
        "points": POINTS,
        "now": dt.datetime.now(dt.UTC),
    }
    started = time.perf_counter()
    with psycopg.connect(conninfo(args, args.db)) as conn:
        for statement in FIXTURE.split(";\n"):
            if statement.strip():
                conn.execute(statement, params)  # type: ignore[arg-type]
        conn.commit()
    with psycopg.connect(conninfo(args, args.db), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


# The analytics' daily pass as it ran the day before the job (its stages, cohort activity and
# order facts as of then), in a process of its own with `loyalty` from the tree; the job's pass
# is due a day later.
YESTERDAYS_ANALYTICS = """
import datetime as dt
from loyalty import clock, create_app
from loyalty.analytics import service
from loyalty.analytics.models import AnalyticsSettings
from loyalty.db import get_database

app = create_app()
with app.app_context():
    session = get_database(app).sessionmaker()
    yesterday = clock.now() - dt.timedelta(days=1)
    service.recompute(session, now=yesterday, batch_size=10_000)
    service.refresh_cohort_activity(session, now=yesterday)
    service.refresh_order_facts(session, now=yesterday)
    session.get(AnalyticsSettings, 1).computed_at = yesterday
    session.commit()
"""


def yesterdays_analytics(args: argparse.Namespace) -> float:
    """Build the analytics as the day before's pass left them; returns its seconds."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", YESTERDAYS_ANALYTICS],
        cwd=args.tree,
        env=cli_env(args),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise BenchError(f"yesterday's analytics failed:\n{result.stderr.strip()[-2000:]}")
    return time.perf_counter() - started


# --- the floor ------------------------------------------------------------------------------

FLOOR = (
    "UPDATE lots SET activated_at = now() WHERE activated_at IS NULL AND activates_at <= now()",
    "UPDATE lots SET expired_at = now(), remaining = 0 "
    "WHERE activated_at IS NOT NULL AND expired_at IS NULL AND remaining > 0 "
    "AND expires_at <= now() AND activated_at < now()",
)


def floor_update(args: argparse.Namespace) -> dict[str, Any]:
    """PostgreSQL alone: the same lots activated and expired by two plain UPDATEs, in one
    transaction that is rolled back (then VACUUM takes the dead rows away)."""
    with psycopg.connect(conninfo(args, args.db)) as conn:
        started = time.perf_counter()
        counts = [conn.execute(statement).rowcount for statement in FLOOR]  # type: ignore[arg-type]
        seconds = time.perf_counter() - started
        conn.rollback()
    with psycopg.connect(conninfo(args, args.db), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE lots")
    return {"seconds": seconds, "activated": counts[0], "expired": counts[1]}


# --- the job --------------------------------------------------------------------------------


class Sampler:
    """Polls pg_stat_activity: the oldest open transaction of the job's database, over time."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.longest = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(conninfo(self.args, "postgres"), autocommit=True) as conn:
            while not self._stop.wait(0.05):
                row = conn.execute(
                    "SELECT extract(epoch FROM max(clock_timestamp() - xact_start)) "
                    "FROM pg_stat_activity WHERE datname = %s AND xact_start IS NOT NULL "
                    "AND pid <> pg_backend_pid()",
                    (self.args.db,),
                ).fetchone()
                self.samples += 1
                if row and row[0] is not None:
                    self.longest = max(self.longest, float(row[0]))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()


def timed(work: Any, seconds: dict[str, float]) -> Any:
    """``work`` (an area's due work), adding its wall seconds to ``seconds`` by its module."""
    name = work.__module__.removeprefix("loyalty.")

    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return work(*args, **kwargs)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started

    return run


def run_job(args: argparse.Namespace) -> dict[str, Any]:
    """The job's own code, in this process, with `loyalty` from the tree under test."""
    sys.path.insert(0, args.tree)
    from sqlalchemy import event

    import loyalty
    from loyalty import create_app, jobs, wiring
    from loyalty.db import get_database, get_session
    from loyalty.ledger import service as ledger_service

    if not str(loyalty.__file__).startswith(args.tree + os.sep):
        raise BenchError(f"`import loyalty` found {loyalty.__file__}, not the tree {args.tree}")
    app = create_app({"DATABASE_URL": database_url(args), "SECRET_KEY": secrets.token_hex(32)})
    transactions: list[float] = []
    opened: dict[int, float] = {}

    with app.app_context():
        engine = get_database(app).engine

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            opened[id(conn)] = time.perf_counter()

        def _end(conn: Any) -> None:
            started = opened.pop(id(conn), None)
            if started is not None:
                transactions.append(time.perf_counter() - started)

        event.listen(engine, "commit", _end)
        event.listen(engine, "rollback", _end)
        statements = {"settle": 0, "all": 0}
        lock = threading.Lock()  # the workers' threads count too

        @event.listens_for(engine, "before_cursor_execute")
        def _count(*_: Any) -> None:
            with lock:
                statements["all"] += 1

        session = get_session()
        profiler = cProfile.Profile() if args.profile else None
        deadline = time.perf_counter() + args.max_seconds if args.max_seconds else None
        batches = settled = 0
        finished = False
        areas: dict[str, float] = {}
        wrapped = {work: timed(work, areas) for work in wiring.DUE_WORK}
        wiring.DUE_WORK = tuple(wrapped.values())
        if hasattr(wiring, "BESIDE"):  # the pass beside the rest (a tree before it has none)
            wiring.BESIDE = frozenset(wrapped[work] for work in wiring.BESIDE)
            wiring.AFTER_BESIDE = wrapped[wiring.AFTER_BESIDE]
        log(
            f"running the job: settle_due_batch(batch_size={args.batch_size}) until none is "
            f"due, in {args.workers} worker(s)"
        )
        with Sampler(args) as sampler:
            postgres_before = postgres_cpu(args.db)
            load_before = os.getloadavg()
            cpu_started = time.process_time()
            started = time.perf_counter()
            if profiler:
                profiler.enable()
            if args.workers > 1:  # what `loyalty jobs run --workers N` does first
                settled = jobs.settle_due_wallets(
                    session, batch_size=args.batch_size, workers=args.workers
                )
                batches = -1  # not counted
                finished = True
            while not finished and (deadline is None or time.perf_counter() < deadline):
                count = ledger_service.settle_due_batch(session, batch_size=args.batch_size)
                if not count:
                    finished = True
                    break
                batches += 1
                settled += count
                if batches % 200 == 0:
                    elapsed = time.perf_counter() - started
                    log(f"  {settled} wallets settled in {elapsed:.0f} s")
            batch_seconds = time.perf_counter() - started
            batch_cpu = time.process_time() - cpu_started
            postgres_after = postgres_cpu(args.db)
            load_after = os.getloadavg()
            statements["settle"] = statements["all"]
            in_batches = len(transactions)  # the settling's transactions come first
            report = None
            if finished:  # what `loyalty jobs run --once --workers N` does besides: the areas'
                report = jobs.run_due(session, batch_size=args.batch_size, workers=args.workers)
            seconds = time.perf_counter() - started
            if profiler:
                profiler.disable()
        session.close()
        engine.dispose()  # the backends exit and report their statistics (`updates`)
    ordered = sorted(transactions)
    batch_transactions = sorted(transactions[:in_batches])
    figures: dict[str, Any] = {
        "seconds": seconds,
        "settle_seconds": batch_seconds,
        "finished": finished,
        "batches": batches,
        "wallets_settled": settled,
        "transactions": len(ordered),
        "batch_transactions": len(batch_transactions),
        "longest_transaction_s": ordered[-1] if ordered else 0.0,
        "longest_batch_transaction_s": batch_transactions[-1] if batch_transactions else 0.0,
        "p99_batch_transaction_s": (
            batch_transactions[int(0.99 * (len(batch_transactions) - 1))]
            if batch_transactions
            else 0.0
        ),
        "p99_transaction_s": ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0,
        "median_transaction_s": ordered[len(ordered) // 2] if ordered else 0.0,
        "longest_open_transaction_sampled_s": sampler.longest,
        "pg_stat_activity_samples": sampler.samples,
        "run_due_report": report.summary() if report else None,
        "run_due_seconds_by_area": {name: round(sec, 2) for name, sec in areas.items()},
        "workers": args.workers,
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "statements_settle": statements["settle"],
        "settle_cpu_s": {  # the batches' CPU, which other load on the machine hardly changes
            "job": batch_cpu,
            "postgres": sum(
                cpu - postgres_before.get(pid, 0.0) for pid, cpu in postgres_after.items()
            ),
        },
        "statements_all": statements["all"],
    }
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(args.profile)
        stats.sort_stats("cumulative").print_stats(args.profile)
        figures["profile"] = out.getvalue()
    return figures


def updates(args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    """(rows updated, of which HOT) of each table so far, from pg_stat_user_tables (a
    backend reports its counts at the end of a transaction at most once a second, and when
    it exits: read once the job's connections are closed)."""
    time.sleep(1.5)
    with psycopg.connect(conninfo(args, args.db)) as conn:
        rows = conn.execute(
            "SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
        ).fetchall()
    return {name: (int(updated), int(hot)) for name, updated, hot in rows}


def lot_state(args: argparse.Namespace) -> dict[str, int]:
    with psycopg.connect(conninfo(args, args.db)) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE activated_at IS NULL), "
            "count(*) FILTER (WHERE expired_at IS NOT NULL), "
            "count(*) FILTER (WHERE activated_at IS NULL AND activates_at <= now()), "
            "count(*) FILTER (WHERE expired_at IS NULL AND remaining > 0 "
            "AND activated_at IS NOT NULL AND expires_at <= now()) FROM lots"
        ).fetchone()
        entries = dict(
            conn.execute(  # type: ignore[arg-type]
                "SELECT kind, count(*) FROM ledger_entries GROUP BY kind"
            ).fetchall()
        )
        due = conn.execute("SELECT count(*) FROM wallets WHERE next_due_at <= now()").fetchone()
        doubled = conn.execute(
            "SELECT count(*) FROM (SELECT reference_id FROM ledger_entries WHERE kind = "
            "'activation' GROUP BY reference_id HAVING count(*) > 1) d"
        ).fetchone()
    assert row is not None and due is not None and doubled is not None
    return {
        "pending": row[0],
        "expired": row[1],
        "due_to_activate": row[2],
        "due_to_expire": row[3],
        "activation_entries": int(entries.get("activation", 0)),
        "expiry_entries": int(entries.get("expiry", 0)),
        "wallets_due": due[0],
        "orders_activated_twice": doubled[0],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lots = args.members * args.lots
    half = lots // 2
    failures: list[str] = []
    try:
        commit = subprocess.run(
            ["git", "-C", args.tree, "describe", "--always", "--dirty", "--abbrev=7"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        log(f"loading {args.members} members x {args.lots} lots = {lots} lots into {args.db}")
        load_seconds = load_fixture(args)
        log(f"loaded in {load_seconds:.1f} s")
        if not args.cold_analytics:
            log(f"yesterday's analytics pass: {yesterdays_analytics(args):.1f} s")
        before = lot_state(args)
        if before["due_to_activate"] != half or before["due_to_expire"] != half:
            raise BenchError(f"the fixture is not what was meant: {before}")
        if not args.skip_verify:
            started = time.perf_counter()
            log(loyalty_cli(args, "ledger", "verify") + " (before)")
            log(f"ledger verify took {time.perf_counter() - started:.1f} s")
        log("the floor: UPDATE lots (activate, expire), rolled back")
        floor = floor_update(args)
        if floor["activated"] != half or floor["expired"] != half:
            failures.append(f"the floor's UPDATEs touched {floor}, not {half} + {half} lots")
        log(f"floor: {floor['seconds']:.2f} s")
        updated_before = updates(args)
        job = run_job(args)
        updated_after = updates(args)
        updated = {
            name: (
                count - updated_before.get(name, (0, 0))[0],
                hot - updated_before.get(name, (0, 0))[1],
            )
            for name, (count, hot) in updated_after.items()
            if count > updated_before.get(name, (0, 0))[0]
        }
        after = lot_state(args)
        done_lots = (half - after["due_to_activate"]) + (half - after["due_to_expire"])
        log(f"after the job: {after}")
        if job["finished"]:
            if after["due_to_activate"] or after["due_to_expire"] or after["wallets_due"]:
                failures.append(f"work still due after the job: {after}")
            if after["activation_entries"] != half or after["expiry_entries"] != half:
                failures.append(
                    f"{after['activation_entries']} activations and {after['expiry_entries']} "
                    f"expiries written for {half} + {half} lots"
                )
        if after["orders_activated_twice"]:
            failures.append(f"{after['orders_activated_twice']} orders activated twice")
        if after["activation_entries"] + after["expiry_entries"] != done_lots:
            failures.append(
                f"{done_lots} lots settled but {after['activation_entries']} activation and "
                f"{after['expiry_entries']} expiry entries"
            )
        if not args.skip_verify:
            try:
                log(loyalty_cli(args, "ledger", "verify") + " (after)")
            except BenchError as error:
                failures.append(str(error))
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    rate = done_lots / job["settle_seconds"] if job["settle_seconds"] else 0.0
    projected = job["seconds"] if job["finished"] else lots / max(rate, 1e-9)
    with psycopg.connect(conninfo(args, "postgres")) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    figures: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, PostgreSQL {version}",
        "tree": args.tree,
        "commit": commit,
        "members": args.members,
        "lots": lots,
        "batch_size": args.batch_size,
        "load_seconds": round(load_seconds, 1),
        "analytics_before": not args.cold_analytics,
        "floor_seconds": round(floor["seconds"], 2),
        "lots_settled": done_lots,
        "lots_per_s": round(rate, 1),
        "job_seconds_for_all": round(projected, 1),
        "job_measured_seconds": round(job["seconds"], 1),
        "ratio": round(projected / floor["seconds"], 1) if floor["seconds"] else None,
        **{k: v for k, v in job.items() if k not in ("seconds", "profile")},
        "updates_hot": updated,  # rows the job updated, of which HOT (heap-only), by table
        "verified": not failures,
        "failures": failures,
    }
    print()
    print(f"machine        {figures['machine']}; {figures['date']}")
    print(f"code           {args.tree} at {commit}")
    print(
        f"fixture        {args.members} members x {args.lots} lots = {lots} lots ({half} due to "
        f"activate, {half} due to expire), loaded with SQL in {load_seconds:.1f} s; "
        + (
            "no analytics before the job"
            if args.cold_analytics
            else "analytics as of the day before"
        )
    )
    print(
        f"floor          {floor['seconds']:.2f} s   (UPDATE lots of the same rows, PostgreSQL "
        "alone)"
    )
    if job["finished"]:
        print(
            f"job            {job['seconds']:.1f} s   ({rate:.0f} lots/s; batch size "
            f"{args.batch_size}, {args.workers} worker(s); goal < 60 s)"
        )
    else:
        print(
            f"job            {projected:.0f} s projected   (stopped after {job['seconds']:.0f} s: "
            f"{done_lots} of {lots} lots, {rate:.0f} lots/s; batch size {args.batch_size}; "
            "goal < 60 s)"
        )
    print(f"ratio          {figures['ratio']}   (job seconds / floor seconds)")
    print(
        f"transactions   {job['transactions']}: longest {1000 * job['longest_transaction_s']:.0f}"
        f" ms, p99 {1000 * job['p99_transaction_s']:.0f} ms, median "
        f"{1000 * job['median_transaction_s']:.0f} ms (a wallet lock lasts one transaction); "
        f"oldest open transaction seen in pg_stat_activity "
        f"{1000 * job['longest_open_transaction_sampled_s']:.0f} ms"
    )
    print(
        f"  of which     the batches' {job['batch_transactions']}: longest "
        f"{1000 * job['longest_batch_transaction_s']:.0f} ms, p99 "
        f"{1000 * job['p99_batch_transaction_s']:.0f} ms (the rest: run_due's areas)"
    )
    print(
        f"statements     {job['statements_settle'] / max(1, done_lots):.2f} per lot settled "
        f"({job['statements_settle']} in the batches, {job['statements_all']} in all; COPYs "
        f"are not seen); the "
        f"batches took {job['settle_seconds']:.1f} s, run_due after them "
        f"{job['seconds'] - job['settle_seconds']:.1f} s"
    )
    cpu = job["settle_cpu_s"]
    print(
        f"CPU            the batches: job {cpu['job']:.1f} s, PostgreSQL {cpu['postgres']:.1f} s"
        f" ({1e6 * cpu['job'] / max(1, done_lots):.0f} + "
        f"{1e6 * cpu['postgres'] / max(1, done_lots):.0f} us per lot; wall "
        f"{job['settle_seconds']:.1f} s: the rest is waiting for a core or a round trip)"
    )
    print(
        "updates        "
        + ", ".join(
            f"{name} {count} ({hot} HOT)"
            for name, (count, hot) in sorted(figures["updates_hot"].items())
        )
        + " (rows the job updated, pg_stat_user_tables)"
    )
    if job["run_due_report"]:
        print(f"run_due        {job['run_due_report']}")
        by_area = ", ".join(
            f"{name} {sec:.1f} s" for name, sec in job["run_due_seconds_by_area"].items()
        )
        print(f"run_due areas  {by_area}")
    print(
        f"load average   {job['load_average_before_after'][0]:.2f} before the job, "
        f"{job['load_average_before_after'][1]:.2f} after its batches (1-minute)"
    )
    if job.get("profile"):
        print(job["profile"])
    print(f"verified       {'yes' if not failures else 'NO'}")
    for failure in failures:
        print(f"  FAILED: {failure}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
