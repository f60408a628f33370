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
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = HERE / "orders.lua"
HOST = "127.0.0.1"

# What `--workers` etc. default to; chosen from the runs recorded in benchmarks/README.md.
DEFAULT_WORKERS = 2
DEFAULT_WORKER_CLASS = "sync"
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


def loyalty_cli(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    """Run the project's `loyalty` command (from this interpreter) and return its stdout."""
    command = [sys.executable, "-c", "from loyalty.cli import main; main()", *args]
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
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


# --- gunicorn ------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def worker_pids(self) -> list[int]:
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            return [int(p) for p in children.read_text().split()]
        except OSError:
            return []


def free_port(preferred: int) -> int:
    for port in [preferred] + [0]:
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise BenchError("no free port")


def start_gunicorn(args: argparse.Namespace, env: dict[str, str], work: Path) -> Server:
    port = free_port(args.port)
    log_path = work / "gunicorn.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(args.workers),
        "--worker-class",
        args.worker_class,
        "--threads",
        str(args.threads),
        "--bind",
        f"{HOST}:{port}",
        "--backlog",
        "2048",
        "--graceful-timeout",
        "20",
        "--error-logfile",
        str(log_path),
        "benchmarks.experiments:app" if args.experiments else "wsgi:app",
    ]
    log(f"starting {' '.join(command[2:])}")
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so that it can be stopped whole
    )
    server = Server(process, port, log_path)
    _RUNNING.append(server)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"gunicorn exited {process.returncode}:\n{tail(log_path)}")
        try:
            status, body = http("GET", f"{server.url}/v1/health", timeout=2)
            if status == 200 and len(server.worker_pids()) >= args.workers:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    raise BenchError(f"gunicorn did not answer /v1/health within 60 s:\n{tail(log_path)}")


def stop_gunicorn(server: Server) -> None:
    """Stop gracefully (requests in flight finish and commit), then kill what is left."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log("gunicorn did not stop within 30 s: killing its process group")
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    try:  # workers left behind by a killed master
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
) -> WrkResult:
    threads = max(1, min(args.wrk_threads, args.concurrency))
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
        str(LUA),
        f"{server.url}/v1/orders",
        "--",
        str(members_file),
        str(work),
        tag,
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


def run_pgbench(args: argparse.Namespace, pgbench: str) -> dict[str, float]:
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
        "tpcb-like",
        "-M",
        args.pgbench_protocol,
        "-n",  # the fresh tables need no vacuum
        dbname,
    ]
    log(f"{' '.join(command[len(common) + 1 :])}")
    meter = CpuMeter(dbname)
    meter.start()
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.duration + 120)
    cpu = meter.stop()
    if result.returncode != 0:
        raise BenchError(f"pgbench exited {result.returncode}:\n{result.stderr}\n{result.stdout}")
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
    if not args.keep_databases:
        with psycopg.connect(admin_conninfo(args), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return figures


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
        accruals = scalar(
            "SELECT count(*) FROM ledger_entries WHERE kind = 'accrual' "
            "AND reference_type = 'order'"
        )
        missing = scalar(
            "SELECT count(*) FROM seen s LEFT JOIN orders o "
            "ON o.order_id = s.order_id AND o.client_id = %s WHERE o.id IS NULL",
            client_id,
        )
        unbooked = scalar(
            "SELECT count(*) FROM orders o LEFT JOIN ledger_entries e ON e.id = o.entry_id "
            "WHERE e.id IS NULL OR e.kind <> 'accrual' OR e.reference_id <> o.order_id "
            "OR e.points <> o.points"
        )
        lots = scalar("SELECT count(*) FROM lots WHERE order_pk IS NOT NULL")
    unanswered = sum(run.unanswered for run in runs)
    extra = orders - (seen - missing)
    log(
        f"ledger: {orders} orders, {accruals} accrual entries, {lots} lots; wrk saw {seen} 201s "
        f"({missing} missing from the ledger); {extra} orders whose response wrk never read "
        f"(requests in flight at the stop: up to {unanswered})"
    )
    if missing:
        failures.append(f"{missing} orders answered 201 are not in the orders table")
    if accruals != orders:
        failures.append(f"{orders} orders but {accruals} accrual entries")
    if lots != orders:
        failures.append(f"{orders} orders but {lots} order lots")
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20, help="seconds per run (20)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections/clients (8)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="gunicorn workers")
    parser.add_argument("--worker-class", default=DEFAULT_WORKER_CLASS, choices=("sync", "gthread"))
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="gthread threads")
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
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = find_tool("wrk", "apt-get install wrk")
    pgbench = None if args.skip_pgbench else find_tool("pgbench", "apt-get install postgresql")
    work = Path(tempfile.mkdtemp(prefix="loyalty-bench-"))
    env = dict(os.environ)
    env.update(
        LOYALTY_DATABASE_URL=database_url(args, args.db),
        LOYALTY_SECRET_KEY=secrets.token_urlsafe(48),
        LOYALTY_TOKEN_TTL=str(int(args.duration + args.warmup) + 600),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("LOYALTY_DEBUG", None)
    if args.experiments:
        from experiments import parse

        env["LOYALTY_BENCH_EXPERIMENTS"] = ",".join(parse(args.experiments))
    server: Server | None = None
    try:
        log(f"recreating database {args.db}")
        recreate_database(args, args.db)
        pg_log = None
        if args.trace_sql:
            pg_log = postgres_log(args)
            args.workers, args.worker_class, args.threads = 1, "sync", 1
            with psycopg.connect(admin_conninfo(args), autocommit=True) as conn:
                conn.execute(f"ALTER DATABASE \"{args.db}\" SET log_statement = 'all'")
        loyalty_cli("db", "upgrade", env=env)
        client = json.loads(
            loyalty_cli("clients", "create", "bench", "--all-scopes", "--json", env=env)
        )

        server = start_gunicorn(args, env, work)
        token = get_token(server, client)
        members_file = work / "members.txt"
        log(f"enrolling {args.members} members")
        member_ids = enroll_members(server, token, args.members, members_file)
        if pg_log is not None:
            trace_sql(args, server, token, member_ids, pg_log)
            return 0
        with psycopg.connect(admin_conninfo(args, args.db), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")

        runs: list[WrkResult] = []
        if args.warmup > 0:
            log(f"warm-up: {args.warmup:g} s")
            runs.append(run_wrk(args, wrk, server, token, members_file, work, "warm", args.warmup))
        profiler = start_profiler(args, server) if args.profile else None
        meter = CpuMeter(args.db, service_pids=[server.process.pid, *server.worker_pids()])
        meter.start()
        log(
            f"measuring: POST /v1/orders, {args.concurrency} connections, {args.duration:g} s, "
            f"gunicorn {args.workers} x {args.worker_class}"
            + (f" ({args.threads} threads)" if args.worker_class == "gthread" else "")
        )
        measured = run_wrk(args, wrk, server, token, members_file, work, "run", args.duration)
        cpu = meter.stop()
        runs.append(measured)
        if profiler is not None:
            try:
                _, err = profiler.communicate(timeout=60)
                log(f"profile written to {args.profile}: {err.decode().strip()[-200:]}")
            except subprocess.TimeoutExpired:
                profiler.kill()
                profiler.wait()
                log("py-spy did not finish in time; killed")
        stop_gunicorn(server)  # graceful: requests still in flight commit before we count
        server = None

        pg = run_pgbench(args, pgbench) if pgbench else None
        ceiling = run_sql_ceiling(args, pgbench, env) if pgbench and args.sql_ceiling else None

        if "no_ledger" in env.get("LOYALTY_BENCH_EXPERIMENTS", ""):
            log("no_ledger writes nothing: the ledger checks are skipped")
            failures = []
        else:
            log("verifying the ledger")
            failures = verify(args, env, client["client_id"], runs, work)
        non_2xx = int(measured["other_status"] + measured["errors_timeout"])
        if non_2xx:
            failures.append(f"{non_2xx} requests answered other than 2xx or timed out")

        rate = measured.rate
        figures: dict[str, Any] = {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, "
            f"PostgreSQL {query_one(args, 'postgres', 'SHOW server_version')}",
            "duration_s": args.duration,
            "concurrency": args.concurrency,
            "gunicorn": f"{args.workers} x {args.worker_class}"
            + (f" x {args.threads} threads" if args.worker_class == "gthread" else ""),
            "experiments": env.get("LOYALTY_BENCH_EXPERIMENTS", ""),
            "members": args.members,
            "accruals": int(measured["created"]),
            "accruals_per_s": round(rate, 1),
            "p50_ms": round(measured["latency_p50_us"] / 1000, 2),
            "p90_ms": round(measured["latency_p90_us"] / 1000, 2),
            "p99_ms": round(measured["latency_p99_us"] / 1000, 2),
            "non_2xx": non_2xx,
            "cpu_ms_per_accrual": {
                "service": round(1000 * cpu["service_s"] / max(1, measured["requests"]), 2),
                "postgres": round(1000 * cpu["postgres_s"] / max(1, measured["requests"]), 2),
                "wrk": round(1000 * cpu["load_generator_s"] / max(1, measured["requests"]), 2),
                "other_processes": round(1000 * cpu["others_s"] / max(1, measured["requests"]), 2),
            },
            "machine_busy": round(cpu["machine_busy"], 3),
            "others_share": round(cpu["others_s"] / max(1e-9, cpu["machine_s"]), 3),
        }
        if pg is not None:
            figures["pgbench_scale"] = int(pg["scale"])
            figures["pgbench_tps"] = round(pg["tps"], 1)
            figures["pgbench_latency_avg_ms"] = pg.get("latency_avg_ms")
            figures["ratio"] = round(rate / pg["tps"], 3)
            figures["pgbench_cpu_ms_per_transaction"] = {
                "postgres": round(pg["postgres_cpu_ms"], 3),
                "pgbench": round(pg["load_generator_cpu_ms"], 3),
            }
            figures["pgbench_machine_busy"] = round(pg["machine_busy"], 3)
            figures["pgbench_others_share"] = round(pg["others_share"], 3)
        if ceiling is not None and pg is not None:
            figures["sql_ceiling_tps"] = round(ceiling["tps"], 1)
            figures["sql_ceiling_ratio"] = round(ceiling["tps"] / pg["tps"], 3)
        figures["verified"] = None if "no_ledger" in figures["experiments"] else not failures

        print()
        print(f"machine        {figures['machine']}; {figures['date']}")
        print(
            f"load           POST /v1/orders, {args.concurrency} connections, "
            f"{args.duration:g} s, gunicorn {figures['gunicorn']}, {args.members} members"
        )
        if figures["experiments"]:
            print(f"experiments    {figures['experiments']} (benchmarks/experiments.py)")
        print(f"accruals/s     {figures['accruals_per_s']:.1f}   ({figures['accruals']} in total)")
        print(f"latency p50    {figures['p50_ms']:.2f} ms")
        print(f"latency p99    {figures['p99_ms']:.2f} ms")
        per = figures["cpu_ms_per_accrual"]
        print(
            f"CPU/accrual    service {per['service']:.2f} ms, PostgreSQL {per['postgres']:.2f} ms,"
            f" wrk {per['wrk']:.2f} ms, other processes {per['other_processes']:.2f} ms;"
            f" machine {100 * figures['machine_busy']:.0f}% busy"
        )
        if pg is not None:
            print(
                f"pgbench TPS    {figures['pgbench_tps']:.1f}   (tpcb-like, scale "
                f"{figures['pgbench_scale']}, {args.concurrency} clients, {args.pgbench_protocol})"
            )
            per = figures["pgbench_cpu_ms_per_transaction"]
            print(
                f"CPU/pgbench tx PostgreSQL {per['postgres']:.3f} ms, pgbench"
                f" {per['pgbench']:.3f} ms; machine {100 * figures['pgbench_machine_busy']:.0f}%"
                " busy"
            )
            print(
                f"ratio          {figures['ratio']:.3f}   (accruals/s / pgbench TPS; goal >= 0.5)"
            )
        if "sql_ceiling_tps" in figures:
            print(
                f"SQL ceiling    {figures['sql_ceiling_tps']:.1f} accruals/s in plain SQL "
                f"(ratio {figures['sql_ceiling_ratio']:.3f}: the most any service code could get)"
            )
        disturbed = [
            f"{name} {100 * share:.0f}%"
            for name, share in (
                ("during wrk", figures["others_share"]),
                ("during pgbench", figures.get("pgbench_others_share", 0.0)),
            )
            if share > OTHERS_WARNING
        ]
        if disturbed:
            print(
                "WARNING        other processes used the CPU (" + ", ".join(disturbed) + " of"
                " what was used): these figures are disturbed; run again on a quiet machine"
            )
        skipped = "no_ledger" in figures["experiments"]
        print(f"verified       {'skipped' if skipped else 'yes' if not failures else 'NO'}")
        for failure in failures:
            print(f"  FAILED: {failure}")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        return 1 if failures else 0
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            stop_gunicorn(server)
        if args.trace_sql:
            with psycopg.connect(admin_conninfo(args), autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{args.db}" RESET log_statement')
        shutil.rmtree(work, ignore_errors=True)


def _on_signal(signum: int, _frame: Any) -> None:
    for server in list(_RUNNING):
        stop_gunicorn(server)
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    sys.exit(main())
