#!/usr/bin/env python3
"""Accrual throughput benchmark: POST /v1/orders under gunicorn against PostgreSQL, compared
with pgbench's tpcb-like transaction on the same server. See benchmarks/README.md.

    python benchmarks/orders.py [--duration 20] [--concurrency 8] [--workers N] [--members 1000]

Steps: recreate the database `loyalty_bench`, migrate it, create an API client, start gunicorn,
enroll members through the API, drive POST /v1/orders with wrk (unique order ids, random
members) at a fixed concurrency for a fixed time, stop gunicorn, run pgbench's built-in
tpcb-like script at the same concurrency and duration in the database `loyalty_pgbench`, then
check that every 201 the load generator saw is an order with its accrual entry in the ledger
and that `loyalty ledger verify` passes. Exits 1 when a check fails, 2 when a tool is missing.

Only 127.0.0.1 is targeted. Every child process is bounded by a timeout and stopped on exit.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import glob
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = HERE / "orders.lua"
BALANCE_LUA = HERE / "balance.lua"
HOST = "127.0.0.1"
# The checkout whose `loyalty` is measured (--tree): `loyalty` commands run in it.
TREE: list[Path] = [ROOT]

# What `--workers` etc. default to; chosen from the runs recorded in benchmarks/README.md.
DEFAULT_WORKERS = 2
DEFAULT_BLOCKING_THREADS = 4  # granian
DEFAULT_WORKER_CLASS = "sync"  # gunicorn
DEFAULT_THREADS = 1
# Warn when processes other than ours used more than this share of the CPU during a run.
OTHERS_WARNING = 0.10


class BenchError(Exception):
    """A step failed; the message says which."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- tools ---------------------------------------------------------------------------------


def find_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
        path = candidates[0] if candidates else None
    if path is None:
        print(f"error: {name} not found; {hint}", file=sys.stderr)
        raise SystemExit(2)
    return path


def loyalty_cli(
    *args: str, env: dict[str, str], timeout: float = 120, cwd: str | Path | None = None
) -> str:
    """Run the project's `loyalty` command (from this interpreter; `loyalty` from the
    PYTHONPATH of ``env``) and return its stdout."""
    command = [sys.executable, "-c", "from loyalty.cli import main; main()", *args]
    result = subprocess.run(
        command, cwd=cwd or TREE[0], env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise BenchError(
            f"loyalty {' '.join(args)} exited {result.returncode}:\n{result.stderr.strip()}"
        )
    return result.stdout


# --- database ------------------------------------------------------------------------------


def admin_conninfo(args: argparse.Namespace, dbname: str = "postgres") -> str:
    return f"host={HOST} port={args.pg_port} user={args.pg_user} dbname={dbname}"


def database_url(args: argparse.Namespace, dbname: str) -> str:
    return f"postgresql://{args.pg_user}@{HOST}:{args.pg_port}/{dbname}"


def recreate_database(args: argparse.Namespace, dbname: str) -> None:
    with psycopg.connect(admin_conninfo(args), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')


def query_one(args: argparse.Namespace, dbname: str, sql: str, params: Any = None) -> Any:
    with psycopg.connect(admin_conninfo(args, dbname), connect_timeout=10) as conn:
        row = conn.execute(sql, params).fetchone()
        return row[0] if row else None


# --- the HTTP server (granian or gunicorn) ---------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    kind: str = "granian"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def worker_pids(self) -> list[int]:
        """Every process under the server's main process (workers, and their helpers)."""
        return descendants(self.process.pid)


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
            for child in children:
                if child not in found:
                    found.append(child)
                    queue.append(child)
    return found


def free_port(preferred: int) -> int:
    for port in [preferred] + [0]:
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise BenchError("no free port")


def server_command(args: argparse.Namespace, port: int, log_path: Path) -> list[str]:
    target = "benchmarks.experiments:app" if args.experiments else "loyalty.wsgi:app"
    if args.server == "granian":
        return [
            sys.executable, "-m", "granian",
            "--interface", "wsgi",
            "--host", HOST, "--port", str(port),
            "--workers", str(args.workers),
            "--blocking-threads", str(args.blocking_threads),
            "--runtime-threads", str(args.runtime_threads),
            "--backlog", "2048",
            "--workers-kill-timeout", "20",
            "--no-access-log",
            "--log-level", "warning",
            target,
        ]  # fmt: skip
    return [
        sys.executable, "-m", "gunicorn",
        "--workers", str(args.workers),
        "--worker-class", args.worker_class,
        "--threads", str(args.threads),
        "--bind", f"{HOST}:{port}",
        "--backlog", "2048",
        "--graceful-timeout", "20",
        "--error-logfile", str(log_path),
        target,
    ]  # fmt: skip


def server_label(args: argparse.Namespace) -> str:
    if args.server == "granian":
        return f"granian {args.workers} x wsgi x {args.blocking_threads} blocking threads"
    return f"gunicorn {args.workers} x {args.worker_class}" + (
        f" x {args.threads} threads" if args.worker_class == "gthread" else ""
    )


def start_server(args: argparse.Namespace, env: dict[str, str], work: Path) -> Server:
    port = free_port(args.port)
    log_path = work / f"{args.server}.log"
    command = server_command(args, port, log_path)
    log(f"starting {' '.join(command[2:])} (PYTHONPATH={env.get('PYTHONPATH', '')})")
    with log_path.open("ab") as output:
        process = subprocess.Popen(
            command,
            cwd=args.tree,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,  # its own process group, so that it can be stopped whole
        )
    server = Server(process, port, log_path, args.server)
    _RUNNING.append(server)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{args.server} exited {process.returncode}:\n{tail(log_path)}")
        try:
            status, body = http("GET", f"{server.url}/v1/health", timeout=2)
            if status == 200 and len(server.worker_pids()) >= args.workers:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    raise BenchError(f"{args.server} did not answer /v1/health within 60 s:\n{tail(log_path)}")


def stop_server(server: Server) -> None:
    """Stop gracefully (requests in flight finish and commit), then kill what is left."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log(f"{server.kind} did not stop within 30 s: killing its process group")
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    try:  # workers left behind by a killed main process
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if server in _RUNNING:
        _RUNNING.remove(server)


_RUNNING: list[Server] = []


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- CPU accounting ------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User plus system CPU seconds of one process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# PostgreSQL's own processes, which work for every database; the client backends of one
# database are told apart by their process title, "postgres: 15/main: USER DB HOST(PORT) ...".
POSTGRES_SHARED = ("checkpointer", "background writer", "walwriter", "wal writer")


def postgres_cpu(database: str) -> dict[int, float]:
    """CPU seconds of the backends of ``database`` and of PostgreSQL's shared processes."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if f" {database} " in f" {title} " or title.endswith(POSTGRES_SHARED):
            found[int(entry.name)] = process_cpu(int(entry.name))
    return found


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return float(sum(values) - idle), float(sum(values))


class CpuMeter:
    """CPU seconds spent between start() and stop() by the service's processes, by the
    PostgreSQL backends of one database (plus PostgreSQL's shared writer processes), by our
    children (the load generator), and by the whole machine; what is left is other processes'.

    Backends that exit before stop() (pgbench's) are followed by polling /proc every 0.2 s."""

    def __init__(self, database: str, service_pids: list[int] | None = None) -> None:
        self.database = database
        self.service_pids = service_pids or []
        self._base: dict[int, float] = {}
        self._seen: dict[int, float] = {}
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True)

    def _update(self) -> None:
        for pid, cpu in postgres_cpu(self.database).items():
            self._seen[pid] = max(cpu, self._seen.get(pid, 0.0))

    def _poll(self) -> None:
        while not self._stopping.wait(0.2):
            self._update()

    def _sample(self) -> dict[str, float]:
        children = os.times()
        busy, total = machine_cpu()
        return {
            "service": sum(process_cpu(pid) for pid in self.service_pids),
            "load_generator": children.children_user + children.children_system,
            "busy": busy,
            "total": total,
            "wall": time.monotonic(),
        }

    def start(self) -> None:
        self._base = postgres_cpu(self.database)
        self._seen = dict(self._base)
        self._start = self._sample()
        self._poller.start()

    def stop(self) -> dict[str, float]:
        end = self._sample()
        self._stopping.set()
        self._poller.join()
        self._update()
        delta = {key: end[key] - self._start[key] for key in end}
        postgres = sum(cpu - self._base.get(pid, 0.0) for pid, cpu in self._seen.items())
        machine = delta["busy"] / CLOCK_TICKS
        ours = delta["service"] + postgres + delta["load_generator"]
        return {
            "service_s": delta["service"],
            "postgres_s": postgres,
            "load_generator_s": delta["load_generator"],
            "machine_s": machine,
            "others_s": max(0.0, machine - ours),
            "machine_busy": delta["busy"] / delta["total"] if delta["total"] else 0.0,
            "wall_s": delta["wall"],
        }


# --- HTTP (setup only; the load comes from wrk) --------------------------------------------


def http(
    method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 10
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def get_token(server: Server, client: dict[str, str]) -> str:
    status, body = http(
        "POST",
        f"{server.url}/v1/auth/token",
        {"client_id": client["client_id"], "client_secret": client["client_secret"]},
    )
    if status != 200:
        raise BenchError(f"POST /v1/auth/token answered {status}: {body}")
    return str(body["access_token"])


def enroll_members(server: Server, token: str, count: int, path: Path) -> list[str]:
    def enroll(i: int) -> str:
        status, body = http(
            "POST", f"{server.url}/v1/members", {"external_id": f"bench-{i:06d}"}, token
        )
        if status not in (200, 201):
            raise BenchError(f"POST /v1/members answered {status}: {body}")
        return str(body["id"])

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(enroll, range(count)))
    path.write_text("\n".join(ids) + "\n")
    return ids


# --- wrk -----------------------------------------------------------------------------------


@dataclass
class WrkResult:
    tag: str
    values: dict[str, float] = field(default_factory=dict)
    output: str = ""

    def __getitem__(self, key: str) -> float:
        return self.values[key]

    @property
    def rate(self) -> float:
        """2xx accruals per second."""
        return (self["created"] + self["replayed"]) / (self["duration_us"] / 1e6)

    @property
    def unanswered(self) -> int:
        """Requests written whose response wrk never read (in flight at the stop, timeouts)."""
        answered = self["created"] + self["replayed"] + self["other_status"]
        return int(max(0, self["sent"] - answered))


def run_wrk(
    args: argparse.Namespace,
    wrk: str,
    server: Server,
    token: str,
    members_file: Path,
    work: Path,
    tag: str,
    duration: float,
    *,
    reads: bool = False,
) -> WrkResult:
    """One wrk run: orders (orders.lua) or, with ``reads``, balance reads (balance.lua)."""
    threads = max(1, min(args.wrk_threads, args.concurrency))
    if reads:
        target = [str(BALANCE_LUA), server.url, "--", str(members_file)]
    else:
        categories = ",".join(DEMO_CATEGORIES) if args.programme == "demo" else ""
        target = [str(LUA), f"{server.url}/v1/orders", "--", str(members_file), str(work), tag]
        target += [categories] if categories else []
    command = [
        wrk,
        "-t",
        str(threads),
        "-c",
        str(args.concurrency),
        "-d",
        f"{int(duration)}s",
        "--timeout",
        "10s",
        "--latency",
        "-H",
        f"Authorization: Bearer {token}",
        "-s",
        *target,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if result.returncode != 0:
        raise BenchError(f"wrk exited {result.returncode}:\n{result.stderr}\n{result.stdout}")
    parsed = WrkResult(tag, output=result.stdout)
    for line in result.stdout.splitlines():
        if line.startswith("bench:"):
            key, value = line[len("bench:") :].split()
            parsed.values[key] = float(value)
    if "created" not in parsed.values:
        raise BenchError(f"wrk printed no results:\n{result.stdout}\n{result.stderr}")
    if result.stderr.strip():
        log(f"wrk ({tag}) stderr: {result.stderr.strip()[:600]}")
    return parsed


# --- pgbench -------------------------------------------------------------------------------


def run_pgbench(
    args: argparse.Namespace, pgbench: str, builtins: list[str]
) -> dict[str, dict[str, float]]:
    """pgbench's built-in scripts (tpcb-like, select-only), one after the other, each at the
    benchmark's concurrency and duration, on one database initialised once."""
    dbname = args.pgbench_db
    scale = args.pgbench_scale or max(1, args.concurrency)
    recreate_database(args, dbname)
    common = ["-h", HOST, "-p", str(args.pg_port), "-U", args.pg_user]
    log(f"pgbench -i -s {scale} ({dbname})")
    init = subprocess.run(
        [pgbench, *common, "-i", "-q", "-s", str(scale), dbname],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if init.returncode != 0:
        raise BenchError(f"pgbench -i exited {init.returncode}:\n{init.stderr}")
    jobs = max(1, min(args.pgbench_jobs, args.concurrency))
    results: dict[str, dict[str, float]] = {}
    for builtin in builtins:
        command = [
            pgbench,
            *common,
            "-c",
            str(args.concurrency),
            "-j",
            str(jobs),
            "-T",
            str(int(args.duration)),
            "-b",
            builtin,
            "-M",
            args.pgbench_protocol,
            "-n",  # the fresh tables need no vacuum
            dbname,
        ]
        log(f"{' '.join(command[len(common) + 1 :])}")
        meter = CpuMeter(dbname)
        meter.start()
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=args.duration + 120
        )
        cpu = meter.stop()
        if result.returncode != 0:
            raise BenchError(
                f"pgbench exited {result.returncode}:\n{result.stderr}\n{result.stdout}"
            )
        figures: dict[str, float] = {"scale": scale}
        for line in result.stdout.splitlines():
            line = line.strip()
            if line.startswith("tps = "):
                figures["tps"] = float(line.split()[2])
            elif line.startswith("latency average = "):
                figures["latency_avg_ms"] = float(line.split()[3])
            elif line.startswith("number of failed transactions:"):
                figures["failed"] = float(line.split(":")[1].split()[0])
        if "tps" not in figures:
            raise BenchError(f"no tps in pgbench's output:\n{result.stdout}")
        transactions = figures["tps"] * cpu["wall_s"]
        figures["postgres_cpu_ms"] = 1000 * cpu["postgres_s"] / max(1.0, transactions)
        figures["load_generator_cpu_ms"] = 1000 * cpu["load_generator_s"] / max(1.0, transactions)
        figures["machine_busy"] = cpu["machine_busy"]
        figures["others_share"] = cpu["others_s"] / max(1e-9, cpu["machine_s"])
        results[builtin] = figures
    if not args.keep_databases:
        with psycopg.connect(admin_conninfo(args), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return results


def run_sql_ceiling(
    args: argparse.Namespace, pgbench: str, env: dict[str, str]
) -> dict[str, float]:
    """pgbench with benchmarks/accrual_ceiling.sql (an accrual in plain SQL) on a copy of the
    bench database, at the same concurrency and duration; the copy is checked and dropped."""
    dbname = f"{args.db}_ceiling"
    with psycopg.connect(admin_conninfo(args), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}" TEMPLATE "{args.db}"')
    with psycopg.connect(admin_conninfo(args, dbname), autocommit=True) as conn:
        conn.execute(  # every member gets a wallet, as after its first order
            "INSERT INTO wallets (id, member_id, available, pending, held, debt, "
            "lifetime_earned, created_at, updated_at) "
            "SELECT 'wal_c' || substr(m.id, 5), m.id, 0, 0, 0, 0, 0, now(), now() "
            "FROM members m WHERE NOT EXISTS (SELECT 1 FROM wallets w WHERE w.member_id = m.id)"
        )
    jobs = max(1, min(args.pgbench_jobs, args.concurrency))
    command = [
        pgbench, "-h", HOST, "-p", str(args.pg_port), "-U", args.pg_user, "-n",
        "-c", str(args.concurrency), "-j", str(jobs), "-T", str(int(args.duration)),
        "-M", "simple", "-D", f"members={args.members}", "-f", str(HERE / "accrual_ceiling.sql"),
        dbname,
    ]  # fmt: skip
    log(f"SQL ceiling: pgbench -f accrual_ceiling.sql -c {args.concurrency} ({dbname})")
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.duration + 120)
    if result.returncode != 0:
        raise BenchError(f"pgbench exited {result.returncode}:\n{result.stderr}\n{result.stdout}")
    tps = next(
        (
            float(line.split()[2])
            for line in result.stdout.splitlines()
            if line.startswith("tps = ")
        ),
        None,
    )
    if tps is None:
        raise BenchError(f"no tps in pgbench's output:\n{result.stdout}")
    ceiling_env = dict(env, LOYALTY_DATABASE_URL=database_url(args, dbname))
    log(loyalty_cli("ledger", "verify", env=ceiling_env, timeout=300).strip() + f" ({dbname})")
    with psycopg.connect(admin_conninfo(args), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return {"tps": tps}


# --- the programme ---------------------------------------------------------------------------

# What the demo's orders contain (loyalty/demo.py): shoes earn x2, outdoor x1.5, gift cards are
# excluded, the rest earn the base rate. Repeats weigh more.
DEMO_CATEGORIES = ("apparel", "apparel", "shoes", "outdoor", "books", "gift-cards")
# Points a budgeted campaign may still give when the load starts, at least (the demo's 50,000
# would run out within seconds and the campaign would stop applying).
CAMPAIGN_ROOM = 100_000_000


def seed_demo_programme(env: dict[str, str], work: Path) -> None:
    """`loyalty demo --no-serve` on the bench database: the demo's programme (tiers, earning
    settings and multipliers, campaigns, rewards, perks, event types and rules, badges), its
    seven members with their history, and its own API client (saved under ``work``)."""
    instance = work / "instance"
    instance.mkdir(exist_ok=True)
    log("seeding the demo programme: loyalty demo --no-serve")
    loyalty_cli(
        "demo", "--no-serve", env=dict(env, LOYALTY_INSTANCE_PATH=str(instance)), timeout=900
    )


def complete_programme(args: argparse.Namespace, server: Server, token: str) -> dict[str, Any]:
    """Through the API (program endpoints): keep the demo's budgeted multiplier campaign
    running through the benchmark with budget to spare, then describe the programme."""
    status, body = http("GET", f"{server.url}/v1/program/campaigns?limit=100", token=token)
    if status != 200:
        raise BenchError(f"GET /v1/program/campaigns answered {status}: {body}")
    now = dt.datetime.now(dt.UTC)
    soon = now + dt.timedelta(hours=2)
    budgeted = [
        c for c in body["items"] if c["active"] and c["multiplier"] and c["budget"] is not None
    ]
    if not budgeted:
        raise BenchError("the demo programme has no budgeted multiplier campaign")
    for campaign in budgeted:
        changes: dict[str, Any] = {}
        if campaign["budget"] - campaign["spent"] < CAMPAIGN_ROOM:
            changes["budget"] = campaign["spent"] + CAMPAIGN_ROOM
        if dt.datetime.fromisoformat(campaign["starts_at"]) > now:
            changes["starts_at"] = (now - dt.timedelta(minutes=5)).isoformat()
        if dt.datetime.fromisoformat(campaign["ends_at"]) < soon:
            changes["ends_at"] = (now + dt.timedelta(days=7)).isoformat()
        if changes:
            url = f"{server.url}/v1/program/campaigns/{campaign['id']}"
            status, answer = http("PATCH", url, changes, token)
            if status != 200:
                raise BenchError(f"PATCH {url} answered {status}: {answer}")
            log(f"campaign {campaign['name']!r}: {changes} (PATCH /v1/program/campaigns/{{id}})")
    with psycopg.connect(admin_conninfo(args, args.db), connect_timeout=10) as conn:

        def count(sql: str) -> int:
            return int(conn.execute(sql).fetchone()[0])  # type: ignore[index]

        summary = {
            "tiers": count("SELECT count(*) FROM tiers"),
            "category_multipliers": count(
                "SELECT count(*) FROM product_multipliers WHERE scope = 'category'"
            ),
            "running_campaigns": count(
                "SELECT count(*) FROM campaigns WHERE active AND starts_at <= now() "
                "AND ends_at > now()"
            ),
            "budgeted_campaigns": count(
                "SELECT count(*) FROM campaigns WHERE active AND budget IS NOT NULL "
                "AND starts_at <= now() AND ends_at > now() AND budget > spent"
            ),
            "active_badges": count("SELECT count(*) FROM badges WHERE active"),
            "event_rules": count("SELECT count(*) FROM event_rules WHERE active"),
            "daily_cap": conn.execute("SELECT daily_cap FROM earning_settings").fetchone()[0],  # type: ignore[index]
        }
    missing = [key for key, value in summary.items() if key != "daily_cap" and not value]
    if missing or summary["tiers"] < 4:
        raise BenchError(f"the demo programme lacks {missing or 'tiers'}: {summary}")
    log(f"programme: {summary}")
    return summary


def set_daily_cap(server: Server, token: str, cap: int | None) -> int | None:
    """PATCH /v1/program/earning's daily cap; returns the one it replaced. The hot scenario
    lifts the demo's cap of 5,000 points a day, which one member reaches within a dozen
    orders: past it an order earns nothing (no entry, no lot), a cheaper path than an
    accrual's (--hot-keep-cap measures that instead)."""
    url = f"{server.url}/v1/program/earning"
    status, body = http("GET", url, token=token)
    if status != 200:
        raise BenchError(f"GET {url} answered {status}: {body}")
    status, answer = http("PATCH", url, {"daily_cap": cap}, token)
    if status != 200:
        raise BenchError(f"PATCH {url} answered {status}: {answer}")
    log(f"daily cap {body['daily_cap']} -> {cap} (PATCH /v1/program/earning)")
    return body["daily_cap"]  # type: ignore[no-any-return]


def round_points(value: Fraction, rounding: str) -> int:
    """The programme's rounding (README "How an order earns points"), written out again here
    so that the check does not trust the code under test."""
    if value < 0:
        return -round_points(-value, rounding)
    if rounding == "floor":
        return math.floor(value)
    if rounding == "ceiling":
        return math.ceil(value)
    return math.floor(value + Fraction(1, 2))  # half_up


def verify_programme(
    args: argparse.Namespace,
    client_id: str,
    spent_before: dict[str, int],
    uncapped: frozenset[str] = frozenset(),
) -> tuple[list[str], dict[str, Any]]:
    """The demo programme's rules applied to every order of the benchmark's client: the base
    rate, the category multiplier of its item, the multiplier of the tier the member had
    reached before the order (replayed from the member's own orders), the tier campaign, the
    exclusion of gift cards and the daily cap (but for the ``uncapped`` members: the hot
    member's run lifts it); each campaign's budget charged exactly."""
    failures: list[str] = []
    with psycopg.connect(admin_conninfo(args, args.db), connect_timeout=10) as conn:
        rate, rounding, timezone = conn.execute(
            "SELECT earn_rate, rounding, timezone FROM program_settings"
        ).fetchone()  # type: ignore[misc]
        excluded, daily_cap = conn.execute(
            "SELECT excluded_categories, daily_cap FROM earning_settings"
        ).fetchone()  # type: ignore[misc]
        products = {
            match: (rule_id, Fraction(multiplier))
            for rule_id, match, multiplier in conn.execute(
                "SELECT id, match, multiplier FROM product_multipliers WHERE scope = 'category'"
            )
        }
        ladder = [
            (threshold, code, Fraction(multiplier))
            for code, threshold, multiplier in conn.execute(
                "SELECT code, threshold, points_multiplier FROM tiers ORDER BY threshold"
            )
        ]
        campaigns = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT id, target, target_values, multiplier, bonus_points, budget, spent "
                "FROM campaigns"
            )
        }
        orders = conn.execute(
            "SELECT member_id, total, items, breakdown, points, "
            "(placed_at AT TIME ZONE %s)::date, placed_at FROM orders WHERE client_id = %s "
            "ORDER BY member_id, placed_at, created_at",
            (timezone, client_id),
        ).fetchall()
        # What the tiers count: every entry that adds to a member's lifetime points (accruals,
        # and the badges' bonus points), in time order.
        earned: dict[str, list[tuple[Any, int]]] = {}
        for member_id, created_at, delta in conn.execute(
            "SELECT e.member_id, e.created_at, e.earned_delta FROM ledger_entries e "
            "WHERE e.earned_delta <> 0 AND e.member_id IN "
            "(SELECT member_id FROM orders WHERE client_id = %s) ORDER BY e.created_at, e.id",
            (client_id,),
        ):
            earned.setdefault(member_id, []).append((created_at, int(delta)))
    stats = dict.fromkeys(
        ("orders", "excluded", "product", "tier", "campaign", "capped", "zero_points"), 0
    )
    stats["tier_upgrades"] = 0
    bad: list[str] = []
    day_points: dict[tuple[str, Any], int] = {}
    charged = dict.fromkeys(campaigns, 0)  # campaign points of orders that no cap cut
    given = dict.fromkeys(campaigns, 0)  # campaign points of all orders
    previous_tier: dict[str, Any] = {}
    for member_id, total, items, breakdown, points, day, placed_at in orders:
        stats["orders"] += 1
        components = {c["rule"]: c["points"] for c in breakdown}
        category = items[0]["category"] if items else None
        # Entries of the order's own transaction carry its time: only earlier ones count.
        earned_before = sum(d for at, d in earned.get(member_id, ()) if at < placed_at)
        tier = max((t for t in ladder if t[0] <= earned_before), default=None)
        if member_id in previous_tier and previous_tier[member_id] != tier:
            stats["tier_upgrades"] += 1
        previous_tier[member_id] = tier
        expected: dict[str, int] = {}
        if category in excluded:
            stats["excluded"] += 1
            expected["base"] = 0
        else:
            exact = Fraction(total) * Fraction(rate) / 100  # USD: two decimals
            base = round_points(exact, rounding)
            expected["base"] = base
            if category in products:
                rule_id, factor = products[category]
                extra = round_points(exact * (factor - 1), rounding)
                if extra:
                    expected[f"product:{rule_id}"] = extra
            if tier is not None and tier[2] != 1:
                extra = round_points(base * (tier[2] - 1), rounding)
                if extra:
                    expected[f"tier:{tier[1]}"] = extra
            for campaign_id, (target, values, factor, bonus, budget, _spent) in campaigns.items():
                if target not in ("all", "tiers") or (
                    target == "tiers" and (tier is None or tier[1] not in values)
                ):
                    continue  # (stage and member campaigns: the bench members are in none)
                extra = round_points(base * (Fraction(factor) - 1), rounding) if factor else 0
                extra += bonus or 0
                if extra > 0 and budget is not None:
                    expected[f"campaign:{campaign_id}"] = extra  # budget checked below
        actual = {rule: value for rule, value in components.items() if not rule.startswith("cap:")}
        cut = sum(value for rule, value in components.items() if rule.startswith("cap:"))
        if actual != expected or points != max(0, sum(actual.values()) + cut):
            if len(bad) < 3:
                bad.append(
                    f"{member_id} total {total} {category}: expected {expected}, got "
                    f"{components} = {points} (lifetime before {earned_before})"
                )
        for rule in actual:
            kind = rule.split(":", 1)[0]
            if kind in stats:
                stats[kind] += 1
            if kind == "campaign":
                campaign_id = rule.split(":", 1)[1]
                given[campaign_id] = given.get(campaign_id, 0) + actual[rule]
                if not cut:
                    charged[campaign_id] = charged.get(campaign_id, 0) + actual[rule]
        stats["capped"] += bool(cut)
        stats["zero_points"] += points == 0
        day_points[(member_id, day)] = day_points.get((member_id, day), 0) + points
    if bad:
        failures.append(
            f"{len(bad)}+ orders did not earn what the programme says, e.g. " + "; ".join(bad)
        )
    if daily_cap is not None:
        over = [
            key for key, value in day_points.items() if value > daily_cap and key[0] not in uncapped
        ]
        if over:
            failures.append(f"{len(over)} member-days earned more than the daily cap {daily_cap}")
    for campaign_id, row in campaigns.items():
        budget, spent = row[4], row[5]
        delta = spent - spent_before.get(campaign_id, 0)
        if budget is not None and spent > budget:
            failures.append(f"campaign {campaign_id} spent {spent} of a budget of {budget}")
        if not charged.get(campaign_id, 0) <= delta <= given.get(campaign_id, 0):
            failures.append(
                f"campaign {campaign_id}: {delta} points charged to its budget during the run, "
                f"but its orders gave {charged.get(campaign_id, 0)} (uncapped) to "
                f"{given.get(campaign_id, 0)}"
            )
    for key in ("product", "tier", "campaign", "excluded"):
        if not stats[key]:
            failures.append(f"no order had a {key} rule applied: is the programme in place?")
    return failures, stats


def campaign_spent(args: argparse.Namespace) -> dict[str, int]:
    with psycopg.connect(admin_conninfo(args, args.db), connect_timeout=10) as conn:
        return {row[0]: int(row[1]) for row in conn.execute("SELECT id, spent FROM campaigns")}


# --- verification --------------------------------------------------------------------------


def verify(
    args: argparse.Namespace, env: dict[str, str], client_id: str, runs: list[WrkResult], work: Path
) -> list[str]:
    """Every 201 wrk saw is an order with its accrual entry; no order without one; no more
    orders than requests sent; the ledger's invariants hold. Returns the failures."""
    failures: list[str] = []
    created_ids: list[str] = []
    for path in sorted(work.glob("created-*.txt")):
        created_ids += [line for line in path.read_text().splitlines() if line]
    seen = sum(int(run["created"]) for run in runs)
    if len(created_ids) != seen:
        failures.append(f"wrk counted {seen} 201s but recorded {len(created_ids)} order ids")
    if len(set(created_ids)) != len(created_ids):
        failures.append("the same order id was answered 201 twice")

    with psycopg.connect(admin_conninfo(args, args.db), connect_timeout=10) as conn:
        conn.execute("CREATE TEMP TABLE seen (order_id text PRIMARY KEY)")
        with conn.cursor().copy("COPY seen (order_id) FROM STDIN") as copy:
            for order_id in set(created_ids):
                copy.write_row((order_id,))

        def scalar(sql: str, *params: Any) -> int:
            row = conn.execute(sql, params).fetchone()
            return int(row[0]) if row else 0

        orders = scalar("SELECT count(*) FROM orders WHERE client_id = %s", client_id)
        earning = scalar(
            "SELECT count(*) FROM orders WHERE client_id = %s AND points > 0", client_id
        )
        accruals = scalar(
            "SELECT count(*) FROM ledger_entries e JOIN orders o ON o.order_id = e.reference_id "
            "WHERE e.kind = 'accrual' AND e.reference_type = 'order' AND o.client_id = %s",
            client_id,
        )
        missing = scalar(
            "SELECT count(*) FROM seen s LEFT JOIN orders o "
            "ON o.order_id = s.order_id AND o.client_id = %s WHERE o.id IS NULL",
            client_id,
        )
        unbooked = scalar(  # an order that earned has its entry; one that did not has none
            "SELECT count(*) FROM orders o LEFT JOIN ledger_entries e ON e.id = o.entry_id "
            "WHERE o.client_id = %s AND (CASE WHEN o.points > 0 THEN e.id IS NULL "
            "OR e.kind <> 'accrual' OR e.reference_id <> o.order_id OR e.points <> o.points "
            "ELSE o.entry_id IS NOT NULL END)",
            client_id,
        )
        lots = scalar(
            "SELECT count(*) FROM lots l JOIN orders o ON o.id = l.order_pk "
            "WHERE o.client_id = %s AND l.amount = o.points",
            client_id,
        )
    unanswered = sum(run.unanswered for run in runs)
    extra = orders - (seen - missing)
    log(
        f"ledger: {orders} orders ({earning} earned points), {accruals} accrual entries, "
        f"{lots} lots; wrk saw {seen} 201s ({missing} missing from the ledger); {extra} orders "
        f"whose response wrk never read (requests in flight at the stop: up to {unanswered})"
    )
    if missing:
        failures.append(f"{missing} orders answered 201 are not in the orders table")
    if accruals != earning:
        failures.append(f"{earning} orders earned points but {accruals} accrual entries")
    if lots != earning:
        failures.append(f"{earning} orders earned points but {lots} order lots")
    if unbooked:
        failures.append(f"{unbooked} orders without a matching accrual entry")
    if extra < 0 or extra > unanswered:
        failures.append(
            f"{extra} orders in the ledger that wrk saw no 201 for, but only {unanswered} "
            "requests went unanswered"
        )
    try:
        out = loyalty_cli("ledger", "verify", env=env, timeout=300)
        log(out.strip())
    except BenchError as error:
        failures.append(str(error))
    return failures


# --- profile -------------------------------------------------------------------------------


def start_profiler(args: argparse.Namespace, server: Server) -> subprocess.Popen[bytes]:
    py_spy = find_tool("py-spy", "pip install py-spy (only needed for --profile)")
    output = Path(args.profile).resolve()
    fmt = "flamegraph" if output.suffix == ".svg" else "raw"
    command = [
        py_spy,
        "record",
        "--pid",
        str(server.process.pid),
        "--subprocesses",
        *(["--idle"] if args.profile_idle else []),  # idle: waits on PostgreSQL count too
        "--rate",
        str(args.profile_rate),
        "--duration",
        str(int(args.duration)),
        "--format",
        fmt,
        "--output",
        str(output),
    ]
    log(f"profiling: {' '.join(command[1:])}")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# --- SQL round trips -----------------------------------------------------------------------


def postgres_log(args: argparse.Namespace) -> Path:
    if args.pg_log:
        path = Path(args.pg_log)
    else:
        candidates = sorted(glob.glob("/var/log/postgresql/postgresql-*-main.log"), reverse=True)
        if not candidates:
            raise BenchError("PostgreSQL's log not found: give --pg-log")
        path = Path(candidates[0])
    try:
        path.open("rb").close()
    except OSError as error:
        raise BenchError(f"cannot read PostgreSQL's log {path}: {error}") from None
    return path


def trace_sql(
    args: argparse.Namespace, server: Server, token: str, members: list[str], pg_log: Path
) -> None:
    """Send orders one at a time to a single worker and print the statements PostgreSQL
    received for each (log_statement = all, set on the bench database only)."""
    tag = f"@{args.db} "
    counts: list[int] = []
    last: list[str] = []
    # The first 3 warm the worker and create 3 wallets (a member's first order also inserts
    # its wallet: 2 statements more); they are not counted. The rest go to those 3 members.
    for i in range(args.trace_sql + 3):
        start = pg_log.stat().st_size
        body = {
            "order_id": f"trace-{i}",
            "member_id": members[i % min(3, len(members))],
            "total": 1234,
            "currency": "USD",
        }
        status, answer = http("POST", f"{server.url}/v1/orders", body, token)
        if status != 201:
            raise BenchError(f"POST /v1/orders answered {status}: {answer}")
        time.sleep(0.05)
        with pg_log.open("rb") as handle:
            handle.seek(start)
            lines = handle.read().decode(errors="replace").splitlines()
        statements = [
            line.split("LOG:  ", 1)[1]
            for line in lines
            if tag in line and "LOG:  " in line and ("statement: " in line or "execute " in line)
        ]
        if i >= 3:
            counts.append(len(statements))
            last = statements
    print(f"\nround trips per POST /v1/orders: {counts} (mean {sum(counts) / len(counts):.1f})")
    print("statements of the last one:")
    for number, statement in enumerate(last, 1):
        print(f"  {number:2d}. {' '.join(statement.split())[:150]}")


# --- main ----------------------------------------------------------------------------------

SCENARIOS = ("spread", "hot", "balance")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20, help="seconds per run (20)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections/clients (8)")
    parser.add_argument(
        "--tree",
        default=str(ROOT),
        help="the checkout whose `loyalty` is measured (default: this script's repository)",
    )
    parser.add_argument("--server", choices=("granian", "gunicorn"), default="granian")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="server processes")
    parser.add_argument(
        "--blocking-threads", type=int, default=DEFAULT_BLOCKING_THREADS, help="granian (4)"
    )
    parser.add_argument("--runtime-threads", type=int, default=1, help="granian (1)")
    parser.add_argument(
        "--worker-class", default=DEFAULT_WORKER_CLASS, choices=("sync", "gthread"), help="gunicorn"
    )
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="gunicorn gthread")
    parser.add_argument(
        "--programme",
        choices=("demo", "empty"),
        default="demo",
        help="demo: `loyalty demo`'s programme (default); empty: no rules configured",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated: spread (orders over random members), hot (every order on one "
        "member), balance (GET balance over random members); default all three",
    )
    parser.add_argument(
        "--hot-member", action="store_true", help="only the hot scenario (--scenarios hot)"
    )
    parser.add_argument(
        "--hot-keep-cap",
        action="store_true",
        help="hot scenario: keep the demo's daily cap (by default it is lifted for the hot "
        "member's run, so that its orders keep earning)",
    )
    parser.add_argument("--members", type=int, default=1000, help="members to spread orders on")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of unmeasured load (3)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--db", default="loyalty_bench")
    parser.add_argument("--pgbench-db", default="loyalty_pgbench")
    parser.add_argument("--pgbench-scale", type=int, default=0, help="default: --concurrency")
    parser.add_argument("--pgbench-jobs", type=int, default=2)
    parser.add_argument(
        "--pgbench-protocol", default="simple", choices=("simple", "extended", "prepared")
    )
    parser.add_argument("--skip-pgbench", action="store_true", help="no pgbench, no ratio")
    parser.add_argument(
        "--sql-ceiling",
        action="store_true",
        help="also run benchmarks/accrual_ceiling.sql (an accrual in plain SQL) with pgbench",
    )
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument(
        "--profile", metavar="FILE", help="py-spy the workers during the run (.svg or .txt)"
    )
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples/s")
    parser.add_argument(
        "--profile-idle", action="store_true", help="profile wall clock, not only CPU time"
    )
    parser.add_argument("--keep-databases", action="store_true", help="leave loyalty_pgbench")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--trace-sql",
        type=int,
        default=0,
        metavar="N",
        help="instead of measuring: log the SQL of N orders sent one at a time, then exit",
    )
    parser.add_argument("--pg-log", help="PostgreSQL's log file, for --trace-sql")
    parser.add_argument(
        "--experiments",
        default="",
        help="serve benchmarks/experiments.py's app with these patches (comma-separated, or all)",
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.concurrency <= 0 or args.workers <= 0 or args.members <= 0:
        parser.error("--duration, --concurrency, --workers and --members must be positive")
    if args.duration > 600 or args.warmup > 120:
        parser.error("keep --duration within 600 s and --warmup within 120 s")
    if args.hot_member:
        args.scenarios = "hot"
    args.scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown or not args.scenarios:
        parser.error(f"--scenarios: choose among {', '.join(SCENARIOS)}")
    args.tree = str(Path(args.tree).resolve())
    if not (Path(args.tree) / "loyalty" / "__init__.py").is_file():
        parser.error(f"--tree {args.tree}: no loyalty package there")
    return args


def server_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of every process that imports `loyalty`: the tree under test first on
    PYTHONPATH (ahead of the editable install), then this repository for `benchmarks`."""
    env = dict(os.environ)
    paths = [args.tree] + ([str(ROOT)] if str(ROOT) != args.tree else [])
    env.update(
        PYTHONPATH=os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p]),
        LOYALTY_DATABASE_URL=database_url(args, args.db),
        LOYALTY_SECRET_KEY=secrets.token_urlsafe(48),
        LOYALTY_TOKEN_TTL=str(int(args.duration + args.warmup) * 3 + 900),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("LOYALTY_DEBUG", None)
    found = subprocess.run(
        [sys.executable, "-c", "import loyalty; print(loyalty.__file__)"],
        cwd=args.tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    if not found.startswith(args.tree + os.sep):
        raise BenchError(f"`import loyalty` finds {found!r}, not the tree {args.tree}")
    return env


@dataclass
class Measured:
    """One measured wrk run and the CPU each side spent during it."""

    run: WrkResult
    cpu: dict[str, float]

    def summary(self) -> dict[str, Any]:
        requests = max(1.0, self.run["requests"])
        return {
            "per_s": round(self.run.rate, 1),
            "count": int(self.run["created"]),
            "p50_ms": round(self.run["latency_p50_us"] / 1000, 2),
            "p90_ms": round(self.run["latency_p90_us"] / 1000, 2),
            "p99_ms": round(self.run["latency_p99_us"] / 1000, 2),
            "non_2xx": int(self.run["other_status"] + self.run["errors_timeout"]),
            "cpu_ms_per_request": {
                "service": round(1000 * self.cpu["service_s"] / requests, 2),
                "postgres": round(1000 * self.cpu["postgres_s"] / requests, 2),
                "wrk": round(1000 * self.cpu["load_generator_s"] / requests, 2),
                "other_processes": round(1000 * self.cpu["others_s"] / requests, 2),
            },
            "machine_busy": round(self.cpu["machine_busy"], 3),
            "others_share": round(self.cpu["others_s"] / max(1e-9, self.cpu["machine_s"]), 3),
        }


def measure(
    args: argparse.Namespace,
    wrk: str,
    server: Server,
    token: str,
    members_file: Path,
    work: Path,
    tag: str,
    *,
    reads: bool = False,
) -> Measured:
    meter = CpuMeter(args.db, service_pids=[server.process.pid, *server.worker_pids()])
    meter.start()
    what = "GET /v1/members/{id}/balance" if reads else "POST /v1/orders"
    log(f"measuring {tag}: {what}, {args.concurrency} connections, {args.duration:g} s")
    run = run_wrk(args, wrk, server, token, members_file, work, tag, args.duration, reads=reads)
    return Measured(run, meter.stop())


def cpu_line(label: str, summary: dict[str, Any], unit: str) -> str:
    per = summary["cpu_ms_per_request"]
    return (
        f"{label:<15}service {per['service']:.2f} ms, PostgreSQL {per['postgres']:.2f} ms,"
        f" wrk {per['wrk']:.2f} ms, other processes {per['other_processes']:.2f} ms per {unit};"
        f" machine {100 * summary['machine_busy']:.0f}% busy"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    TREE[0] = Path(args.tree)
    wrk = find_tool("wrk", "apt-get install wrk")
    pgbench = None if args.skip_pgbench else find_tool("pgbench", "apt-get install postgresql")
    work = Path(tempfile.mkdtemp(prefix="loyalty-bench-"))
    server: Server | None = None
    try:
        env = server_env(args)
        if args.experiments:
            from experiments import parse

            args.experiments = ",".join(parse(args.experiments))
            env["LOYALTY_BENCH_EXPERIMENTS"] = args.experiments
        log(f"measuring the code of {args.tree} ({git_describe(args.tree)})")
        log(f"recreating database {args.db}")
        recreate_database(args, args.db)
        pg_log = None
        if args.trace_sql:
            pg_log = postgres_log(args)
            args.workers, args.worker_class, args.threads = 1, "sync", 1
            args.blocking_threads = 1
            with psycopg.connect(admin_conninfo(args), autocommit=True) as conn:
                conn.execute(f"ALTER DATABASE \"{args.db}\" SET log_statement = 'all'")
        loyalty_cli("db", "upgrade", env=env)
        if args.programme == "demo":
            seed_demo_programme(env, work)
        client = json.loads(
            loyalty_cli("clients", "create", "bench", "--all-scopes", "--json", env=env)
        )

        server = start_server(args, env, work)
        token = get_token(server, client)
        programme = complete_programme(args, server, token) if args.programme == "demo" else {}
        members_file = work / "members.txt"
        log(f"enrolling {args.members} members")
        member_ids = enroll_members(server, token, args.members, members_file)
        if pg_log is not None:
            trace_sql(args, server, token, member_ids, pg_log)
            return 0
        hot_file = work / "hot-member.txt"
        if "hot" in args.scenarios:
            status, body = http(
                "POST", f"{server.url}/v1/members", {"external_id": "bench-hot"}, token
            )
            if status not in (200, 201):
                raise BenchError(f"POST /v1/members answered {status}: {body}")
            hot_file.write_text(body["id"] + "\n")
        with psycopg.connect(admin_conninfo(args, args.db), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        spent_before = campaign_spent(args)

        runs: list[WrkResult] = []
        measured: dict[str, Measured] = {}
        if args.warmup > 0:
            log(f"warm-up: {args.warmup:g} s")
            runs.append(run_wrk(args, wrk, server, token, members_file, work, "warm", args.warmup))
        profiler = start_profiler(args, server) if args.profile else None
        log(f"server: {server_label(args)}")
        for scenario in args.scenarios:
            if scenario == "spread":
                measured["spread"] = measure(args, wrk, server, token, members_file, work, "run")
                runs.append(measured["spread"].run)
            elif scenario == "hot":
                cap = None
                if args.programme == "demo" and not args.hot_keep_cap:
                    cap = set_daily_cap(server, token, None)
                measured["hot"] = measure(args, wrk, server, token, hot_file, work, "hot")
                runs.append(measured["hot"].run)
                if cap is not None:
                    set_daily_cap(server, token, cap)
            else:
                measured["balance"] = measure(
                    args, wrk, server, token, members_file, work, "balance", reads=True
                )
            if profiler is not None:
                try:
                    _, err = profiler.communicate(timeout=60)
                    log(f"profile written to {args.profile}: {err.decode().strip()[-200:]}")
                except subprocess.TimeoutExpired:
                    profiler.kill()
                    profiler.wait()
                    log("py-spy did not finish in time; killed")
                profiler = None
        stop_server(server)  # graceful: requests still in flight commit before we count
        server = None

        builtins = ["tpcb-like"] + (["select-only"] if "balance" in measured else [])
        pg = run_pgbench(args, pgbench, builtins) if pgbench else {}
        ceiling = run_sql_ceiling(args, pgbench, env) if pgbench and args.sql_ceiling else None

        failures: list[str] = []
        programme_stats: dict[str, Any] = {}
        if "no_ledger" in env.get("LOYALTY_BENCH_EXPERIMENTS", ""):
            log("no_ledger writes nothing: the ledger checks are skipped")
        else:
            log("verifying the ledger")
            failures = verify(args, env, client["client_id"], runs, work)
            if args.programme == "demo":
                uncapped = frozenset(
                    hot_file.read_text().split()
                    if "hot" in measured and not args.hot_keep_cap
                    else ()
                )
                more, programme_stats = verify_programme(
                    args, client["client_id"], spent_before, uncapped
                )
                log(f"programme rules applied: {programme_stats}")
                failures += more
        for name, result in measured.items():
            summary = result.summary()
            if summary["non_2xx"]:
                failures.append(f"{name}: {summary['non_2xx']} requests answered other than 2xx")

        figures = report(args, measured, pg, ceiling, programme, programme_stats, failures)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        return 1 if failures else 0
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            stop_server(server)
        if args.trace_sql:
            with psycopg.connect(admin_conninfo(args), autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{args.db}" RESET log_statement')
        shutil.rmtree(work, ignore_errors=True)


def git_describe(tree: str) -> str:
    result = subprocess.run(
        ["git", "-C", tree, "describe", "--always", "--dirty", "--abbrev=7"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.stdout.strip() or "not a git checkout"


def report(
    args: argparse.Namespace,
    measured: dict[str, Measured],
    pg: dict[str, dict[str, float]],
    ceiling: dict[str, float] | None,
    programme: dict[str, Any],
    programme_stats: dict[str, Any],
    failures: list[str],
) -> dict[str, Any]:
    """Print the figures (the first lines as before this had scenarios) and return them."""
    figures: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, "
        f"PostgreSQL {query_one(args, 'postgres', 'SHOW server_version')}",
        "tree": args.tree,
        "commit": git_describe(args.tree),
        "duration_s": args.duration,
        "concurrency": args.concurrency,
        "server": server_label(args),
        "programme": args.programme,
        "programme_config": programme,
        "experiments": args.experiments,
        "members": args.members,
        "scenarios": {name: result.summary() for name, result in measured.items()},
    }
    tpcb = pg.get("tpcb-like")
    select = pg.get("select-only")
    spread = figures["scenarios"].get("spread")
    hot = figures["scenarios"].get("hot")
    balance = figures["scenarios"].get("balance")
    if spread:  # the figures of the benchmark before it had scenarios, under their old names
        figures.update(
            accruals=spread["count"],
            accruals_per_s=spread["per_s"],
            p50_ms=spread["p50_ms"],
            p90_ms=spread["p90_ms"],
            p99_ms=spread["p99_ms"],
            non_2xx=spread["non_2xx"],
            cpu_ms_per_accrual=spread["cpu_ms_per_request"],
            machine_busy=spread["machine_busy"],
            others_share=spread["others_share"],
        )
    for name, result in pg.items():
        figures[f"pgbench_{name.replace('-', '_')}"] = {
            "tps": round(result["tps"], 1),
            "latency_avg_ms": result.get("latency_avg_ms"),
            "scale": int(result["scale"]),
            "cpu_ms_per_transaction": {
                "postgres": round(result["postgres_cpu_ms"], 3),
                "pgbench": round(result["load_generator_cpu_ms"], 3),
            },
            "machine_busy": round(result["machine_busy"], 3),
            "others_share": round(result["others_share"], 3),
        }
    if tpcb:
        figures["pgbench_tps"] = round(tpcb["tps"], 1)
        if spread:
            figures["ratio"] = round(spread["per_s"] / tpcb["tps"], 3)
        if hot:
            figures["hot_ratio"] = round(hot["per_s"] / tpcb["tps"], 3)
    if spread and hot:
        figures["hot_vs_spread"] = round(hot["per_s"] / max(1e-9, spread["per_s"]), 3)
    if select and balance:
        figures["pgbench_select_only_tps"] = round(select["tps"], 1)
        figures["read_ratio"] = round(balance["per_s"] / select["tps"], 3)
    if ceiling is not None and tpcb:
        figures["sql_ceiling_tps"] = round(ceiling["tps"], 1)
        figures["sql_ceiling_ratio"] = round(ceiling["tps"] / tpcb["tps"], 3)
    if programme_stats:
        figures["programme_rules_applied"] = programme_stats
    skipped = "no_ledger" in figures["experiments"]
    figures["verified"] = None if skipped else not failures
    figures["failures"] = failures

    print()
    print(f"machine        {figures['machine']}; {figures['date']}")
    print(f"code           {args.tree} at {figures['commit']}")
    print(
        f"load           {args.concurrency} connections, {args.duration:g} s per scenario, "
        f"{figures['server']}, {args.members} members, programme {args.programme}"
    )
    if figures["experiments"]:
        print(f"experiments    {figures['experiments']} (benchmarks/experiments.py)")
    if spread:
        print(f"accruals/s     {spread['per_s']:.1f}   ({spread['count']} in total)")
        print(f"latency p50    {spread['p50_ms']:.2f} ms")
        print(f"latency p99    {spread['p99_ms']:.2f} ms")
        print(cpu_line("CPU/accrual", spread, "accrual"))
    if tpcb:
        print(
            f"pgbench TPS    {tpcb['tps']:.1f}   (tpcb-like, scale {int(tpcb['scale'])}, "
            f"{args.concurrency} clients, {args.pgbench_protocol})"
        )
        print(
            f"CPU/pgbench tx PostgreSQL {tpcb['postgres_cpu_ms']:.3f} ms, pgbench"
            f" {tpcb['load_generator_cpu_ms']:.3f} ms; machine {100 * tpcb['machine_busy']:.0f}%"
            " busy"
        )
        if spread:
            print(
                f"ratio          {figures['ratio']:.3f}   (accruals/s / pgbench TPS; goal >= 0.25,"
                " stretch 0.35)"
            )
    if hot:
        print(
            f"hot accruals/s {hot['per_s']:.1f}   ({hot['count']} in total, every order on one "
            "member)"
        )
        print(f"hot p50/p99    {hot['p50_ms']:.2f} ms / {hot['p99_ms']:.2f} ms")
        print(cpu_line("CPU/hot order", hot, "accrual"))
        if "hot_vs_spread" in figures:
            print(f"hot / spread   {figures['hot_vs_spread']:.3f}   (goal >= 0.5)")
    if balance:
        print(f"balance reads/s {balance['per_s']:.1f}  (GET /v1/members/{{id}}/balance)")
        print(f"balance p50/p99 {balance['p50_ms']:.2f} ms / {balance['p99_ms']:.2f} ms")
        print(cpu_line("CPU/read", balance, "read"))
    if select and balance:
        print(
            f"pgbench select-only TPS {select['tps']:.1f}   (scale {int(select['scale'])}, "
            f"{args.concurrency} clients)"
        )
        print(f"read ratio     {figures['read_ratio']:.3f}   (balance reads/s / select-only TPS)")
    if "sql_ceiling_tps" in figures:
        print(
            f"SQL ceiling    {figures['sql_ceiling_tps']:.1f} accruals/s in plain SQL "
            f"(ratio {figures['sql_ceiling_ratio']:.3f}: the most any service code could get)"
        )
    if programme_stats:
        stats = programme_stats
        print(
            f"programme      {stats['orders']} orders checked against the rules: "
            f"{stats['product']} with a category multiplier, {stats['tier']} a tier multiplier, "
            f"{stats['campaign']} a campaign, {stats['excluded']} excluded (gift cards), "
            f"{stats['capped']} cut by the daily cap ({stats['zero_points']} earned nothing), "
            f"{stats['tier_upgrades']} tier upgrades"
        )
    disturbed = [
        f"{name} {100 * share:.0f}%"
        for name, share in [
            *(
                (f"during {key}", value["others_share"])
                for key, value in figures["scenarios"].items()
            ),
            *((f"during pgbench {key}", value["others_share"]) for key, value in pg.items()),
        ]
        if share > OTHERS_WARNING
    ]
    if disturbed:
        print(
            "WARNING        other processes used the CPU (" + ", ".join(disturbed) + " of"
            " what was used): these figures are disturbed; run again on a quiet machine"
        )
    print(f"verified       {'skipped' if skipped else 'yes' if not failures else 'NO'}")
    for failure in failures:
        print(f"  FAILED: {failure}")
    return figures


def _on_signal(signum: int, _frame: Any) -> None:
    for server in list(_RUNNING):
        stop_server(server)
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    sys.exit(main())
