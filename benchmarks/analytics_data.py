"""Load a programme of analytics size into its own PostgreSQL database through COPY.

    python benchmarks/analytics_data.py                      # 1M members, 20M entries, 10M events
    python benchmarks/analytics_data.py --scale 0.1          # a tenth of each

The database (default ``loyalty_bench_analytics``) is dropped, created and migrated first
(`loyalty db upgrade`), then filled table by table with COPY, one progress bar each: members
and their wallets, orders (30% of the entries' count: an accrual and an activation each, 5%
refunded in full), redemptions (20%), bonuses (10%) and expiries (10%) as ledger entries, and
engagement events (70% check-ins, 20% reviews, 10% NPS answers). Members joined over the last
five years in four time zones, 10% referred; each order, redemption and event falls after its
member's enrolment. Foreign keys are not checked during the load (``session_replication_role
= replica``): the generator writes every referenced row first. The figures are plausible, not
a ledger that balances: the analytics read them, `loyalty ledger verify` would not pass.
Deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import psycopg
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loyalty import migrator  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
ZONES = ("UTC", "Asia/Tokyo", "America/New_York", "Europe/Berlin")
ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
CHUNK = 20_000
NULL = "\\N"


def code(index: int) -> str:
    """A unique 8-character referral code for member ``index``."""
    chars = []
    for _ in range(8):
        index, rest = divmod(index, len(ALPHABET))
        chars.append(ALPHABET[rest])
    return "".join(chars)


def stamp(moment: dt.datetime) -> str:
    return moment.isoformat()


class Plan:
    """How many of each, and the one clock every row is dated against."""

    def __init__(self, scale: float, seed: int) -> None:
        self.members = max(1000, int(1_000_000 * scale))
        entries = max(10_000, int(20_000_000 * scale))
        self.orders = int(entries * 0.3)
        self.redemptions = int(entries * 0.2)
        self.bonuses = int(entries * 0.1)
        self.expiries = entries - 2 * self.orders - self.redemptions - self.bonuses
        self.events = max(5000, int(10_000_000 * scale))
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.random = random.Random(seed)
        span = 5 * 365 * 86400
        self.enrolled = [
            self.now - dt.timedelta(seconds=self.random.randrange(span))
            for _ in range(self.members)
        ]

    def member(self) -> int:
        return self.random.randrange(self.members)

    def after_enrolment(self, index: int) -> dt.datetime:
        """A moment between the member's enrolment and now, earlier moments likelier."""
        start = self.enrolled[index]
        room = (self.now - start).total_seconds()
        return start + dt.timedelta(seconds=room * self.random.random() ** 2)


def copy(
    connection: psycopg.Connection, table: str, columns: str, total: int, rows: Iterator[str]
) -> None:
    """COPY ``rows`` (tab-separated lines) into ``table`` with a progress bar."""
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as sink,
        tqdm(total=total, desc=table, unit=" rows", unit_scale=True) as bar,
    ):
        batch: list[str] = []
        for line in rows:
            batch.append(line)
            if len(batch) >= CHUNK:
                sink.write("".join(batch))
                bar.update(len(batch))
                batch = []
        if batch:
            sink.write("".join(batch))
            bar.update(len(batch))
    connection.commit()


def members(plan: Plan) -> Iterator[str]:
    for i in range(plan.members):
        referrer = (
            f"mem_{plan.random.randrange(i):08d}" if i and plan.random.random() < 0.1 else NULL
        )
        at = stamp(plan.enrolled[i])
        zone = ZONES[i % len(ZONES)]
        yield (
            f"mem_{i:08d}\tbench-{i}\t{zone}\tf\tactive\t{code(i)}\t{referrer}\t{{}}\t{at}\t{at}\t{at}\n"
        )


def wallets(plan: Plan) -> Iterator[str]:
    for i in range(plan.members):
        at = stamp(plan.enrolled[i])
        yield f"wal_{i:08d}\tmem_{i:08d}\t0\t0\t0\t0\t0\t{at}\t{at}\n"


def ledger(plan: Plan, order_rows: IO[str]) -> Iterator[str]:
    """Entries with explicit ids: per order an accrual and an activation (ids 2k+1, 2k+2),
    then redemptions, bonuses and expiries. Writes the orders' lines to ``order_rows`` (a
    temporary file) and yields the entries' lines."""
    entry = 0

    def line(
        i: int,
        kind: str,
        points: int,
        avail: int,
        pend: int,
        counter: str,
        amount: int,
        at: dt.datetime,
        reference: str = NULL,
        earned: int = 0,
    ) -> str:
        return (
            f"{entry}\twal_{i:08d}\tmem_{i:08d}\t{kind}\t{points}\t{avail}\t{pend}\t0\t0\t{earned}"
            f"\t{counter}\t{amount}\t{reference}\t0\t0\t0\t{stamp(at)}\n"
        )

    for n in range(plan.orders):
        i = plan.member()
        placed = plan.after_enrolment(i)
        total = plan.random.randrange(500, 30000)
        points = total // 100
        refunded = total if plan.random.random() < 0.05 else 0
        activates = placed + dt.timedelta(days=14)
        entry += 1
        order_rows.write(
            f"ord_{n:09d}\tchn_default\tO-{n}\tmem_{i:08d}\twal_{i:08d}\t{total}\tUSD\t[]\t"
            f"{stamp(placed)}\t{points}\t0\t{refunded}\t{stamp(activates)}\t[]\t{entry}\tx\t{{}}\t"
            f"{stamp(placed)}\n"
        )
        yield line(i, "accrual", points, 0, points, "issuance", -points, placed, earned=points)
        entry += 1
        yield line(i, "activation", points, points, -points, NULL, 0, min(activates, plan.now))
    for _ in range(plan.redemptions):
        i = plan.member()
        points = plan.random.randrange(10, 300)
        entry += 1
        yield line(
            i, "redemption", -points, -points, 0, "redemption", points, plan.after_enrolment(i)
        )
    for _ in range(plan.bonuses):
        i = plan.member()
        points = plan.random.randrange(5, 100)
        entry += 1
        yield line(
            i,
            "bonus",
            points,
            points,
            0,
            "issuance",
            -points,
            plan.after_enrolment(i),
            earned=points,
        )
    for n in range(plan.expiries):
        i = plan.member()
        points = plan.random.randrange(5, 200)
        entry += 1
        yield line(
            i,
            "expiry",
            -points,
            -points,
            0,
            "expiry",
            points,
            plan.after_enrolment(i),
            reference=f"lot-{n}",
        )


def events(plan: Plan) -> Iterator[str]:
    for n in range(plan.events):
        i = plan.member()
        at = plan.after_enrolment(i)
        roll = plan.random.random()
        if roll < 0.7:
            kind, properties = "check_in", "{}"
        elif roll < 0.9:
            kind, properties = "review.posted", json.dumps({"stars": plan.random.randrange(1, 6)})
        else:
            kind, properties = "nps.responded", json.dumps({"score": plan.random.randrange(11)})
        yield (
            f"evt_{n:09d}\tchn_default\te-{n}\tmem_{i:08d}\t{kind}\t{stamp(at)}\t{at.date()}\t"
            f"{properties}\t0\tx\t{{}}\t{stamp(at)}\n"
        )


def _rewound(file: IO[str]) -> Iterator[str]:
    file.seek(0)
    yield from file


def recreate(name: str) -> str:
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    return SERVER.rsplit("/", 1)[0] + f"/{name}"


def load(url: str, plan: Plan) -> dict[str, float]:
    """Fill the database; returns seconds per table."""
    timings: dict[str, float] = {}

    def timed(label: str, work: Callable[[], None]) -> None:
        started = time.perf_counter()
        work()
        timings[label] = round(time.perf_counter() - started, 1)

    with psycopg.connect(url) as connection:
        # The rows are consistent by construction (every wallet, member and entry a row refers
        # to is loaded before it): skip the foreign-key triggers, which would otherwise check
        # each row at the end of its COPY.
        connection.execute("SET session_replication_role = replica")
        timed(
            "members",
            lambda: copy(
                connection,
                "members",
                "id, external_id, timezone, marketing_consent, status, referral_code, referrer_id, "
                "metadata, enrolled_at, created_at, updated_at",
                plan.members,
                members(plan),
            ),
        )
        timed(
            "wallets",
            lambda: copy(
                connection,
                "wallets",
                "id, member_id, available, pending, held, debt, lifetime_earned, created_at, "
                "updated_at",
                plan.members,
                wallets(plan),
            ),
        )
        order_rows = tempfile.TemporaryFile("w+")
        entries = 2 * plan.orders + plan.redemptions + plan.bonuses + plan.expiries
        timed(
            "ledger_entries",
            lambda: copy(
                connection,
                "ledger_entries",
                "id, wallet_id, member_id, kind, points, available_delta, pending_delta, "
                "held_delta, debt_delta, earned_delta, counter_account, counter_amount, "
                "reference_id, "
                "balance_available, balance_pending, balance_held, created_at",
                entries,
                ledger(plan, order_rows),
            ),
        )
        timed(
            "orders",
            lambda: copy(
                connection,
                "orders",
                "id, channel_id, order_id, member_id, wallet_id, total, currency, items, "
                "placed_at, points, points_reversed, amount_refunded, activates_at, breakdown, "
                "entry_id, "
                "request_hash, response, created_at",
                plan.orders,
                _rewound(order_rows),
            ),
        )
        order_rows.close()
        first = 2 * plan.orders + 1
        timed(
            "redemptions",
            lambda: (
                connection.execute(
                    "INSERT INTO redemptions "
                    "(id, wallet_id, member_id, points, entry_id, created_at) "
                    "SELECT 'red_' || id, wallet_id, member_id, -points, id, created_at "
                    "FROM ledger_entries WHERE id >= %s AND id < %s",
                    (first, first + plan.redemptions),
                )
                and connection.commit()
            ),
        )
        timed(
            "community_events",
            lambda: copy(
                connection,
                "community_events",
                "id, channel_id, event_id, member_id, type, occurred_at, local_date, properties, "
                "points, request_hash, response, created_at",
                plan.events,
                events(plan),
            ),
        )
        started = time.perf_counter()
        connection.execute(
            "SELECT setval(pg_get_serial_sequence('ledger_entries', 'id'), %s)", (entries,)
        )
        connection.execute(
            "UPDATE wallets w SET available = s.available, pending = s.pending, "
            "lifetime_earned = s.earned, last_activity_at = s.last FROM (SELECT wallet_id, "
            "greatest(sum(available_delta), 0) AS available, greatest(sum(pending_delta), 0) "
            "AS pending, sum(earned_delta) AS earned, max(created_at) AS last "
            "FROM ledger_entries GROUP BY wallet_id) s WHERE s.wallet_id = w.id"
        )
        connection.commit()
        timings["wallet balances"] = round(time.perf_counter() - started, 1)
    with psycopg.connect(url, autocommit=True) as connection:
        started = time.perf_counter()
        connection.execute("VACUUM ANALYZE")
        timings["vacuum analyze"] = round(time.perf_counter() - started, 1)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0: 1M members (default)")
    parser.add_argument("--database", default="loyalty_bench_analytics")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args(argv)
    url = recreate(args.database)
    migrator.upgrade(migrator.alembic_config(url.replace("postgresql://", "postgresql+psycopg://")))
    plan = Plan(args.scale, args.seed)
    entries = 2 * plan.orders + plan.redemptions + plan.bonuses + plan.expiries
    print(
        f"loading {plan.members} members, {entries} ledger entries ({plan.orders} orders, "
        f"{plan.redemptions} redemptions), "
        f"{plan.events} events into {args.database}",
        flush=True,
    )
    timings = load(url, plan)
    print(json.dumps({"database": args.database, "seconds": timings}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
