"""What one accrual reads, as PostgreSQL plans it: an accrual's reads stay within its own
member's rows, however many orders other members placed.

psycopg prepares a statement once it has run it a few times, and PostgreSQL may then plan it
once for any parameters (a generic plan, chosen when its estimate is no worse than a plan for
the values at hand). A generic plan cannot tell how selective a date range is, so a read of
one member's orders in a month could scan every order of that month and keep the member's.
The counts of statements (test_statements.py) do not see that; a wall clock would, on a
large database only. This test asks PostgreSQL for the generic plan of each read an
accrual sends, runs it on a database where other members placed many orders this month,
and counts the rows each scan of it read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg import sql
from sqlalchemy import Connection, Engine, event

from loyalty.auth.rules import SCOPES

OTHER_MEMBERS = 40
# Orders other members placed today: as many as a busy programme's day, so that PostgreSQL's
# estimates are those of a real database, not of a table of a few pages.
OTHER_ORDERS = 20_000
# The most rows a scan of an accrual's read may touch here: the member has three orders; the
# configuration tables (tiers, campaigns, settings) hold a few rows each.
ROWS_PER_SCAN = 30

_SCANS = {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Index Scan", "Bitmap Heap Scan"}


@pytest.fixture
def reads(engine: Engine) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """The statements sent meanwhile that can run again, with their parameters: reads, and
    upserts (which read the rows they might conflict with; run again, they change nothing
    new, and the plans are run inside a savepoint rolled back anyway)."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb == "SELECT" or (verb in {"WITH", "INSERT"} and "ON CONFLICT" in statement):
            seen.append((statement, dict(parameters or {})))

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


SHOES = {"sku": "shoe-1", "category": "shoes", "quantity": 1, "unit_price": 2000}


def _enroll(client: FlaskClient, headers: dict[str, str], external_id: str) -> str:
    answer = client.post("/v1/members", json={"external_id": external_id}, headers=headers)
    assert answer.status_code == 201 and answer.json is not None, answer.json
    return str(answer.json["id"])


def _accrue(
    client: FlaskClient,
    headers: dict[str, str],
    member_id: str,
    order_id: str,
    *,
    total: int = 2000,
    items: list[dict[str, Any]] | None = None,
) -> None:
    body = {"member_id": member_id, "total": total, "currency": "USD", "order_id": order_id}
    answer = client.post("/v1/orders", json={**body, "items": items or []}, headers=headers)
    assert answer.status_code == 201, answer.json


def generic_plan(connection: Connection, statement: str, parameters: dict[str, Any]) -> Any:
    """Run ``statement`` as a prepared statement with PostgreSQL's generic plan, and return
    that plan with what each node did (EXPLAIN ANALYZE, as JSON); what it wrote is undone."""
    numbers: dict[str, int] = {}

    def placeholder(match: re.Match[str]) -> str:
        return f"${numbers.setdefault(match.group(1), len(numbers) + 1)}"

    text = re.sub(r"%\((\w+)\)s", placeholder, statement).replace("%%", "%")
    raw = connection.connection.driver_connection
    values = sql.SQL(", ").join(sql.Literal(parameters[name]) for name in numbers)
    connection.exec_driver_sql("SAVEPOINT generic_plan")
    connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
    # The test's tables are small enough that PostgreSQL reads some of them whole rather than
    # through an index, which it would not do at size; what is asked here is whether an index
    # bounds each read to the member's rows.
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    connection.exec_driver_sql(f"PREPARE generic_read AS {text}")
    try:
        arguments = sql.SQL("({})").format(values) if numbers else sql.SQL("")
        execute = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE generic_read{}").format(arguments)
        explained = connection.exec_driver_sql(execute.as_string(raw)).scalar_one()
        return explained[0]["Plan"]
    finally:
        connection.exec_driver_sql("ROLLBACK TO SAVEPOINT generic_plan")
        connection.exec_driver_sql("DEALLOCATE generic_read")
        connection.exec_driver_sql("RESET plan_cache_mode")
        connection.exec_driver_sql("RESET enable_seqscan")


def scans(plan: Any) -> Iterator[tuple[str, int]]:
    """Each scan of the plan with the rows it read (kept or filtered out), every loop."""
    if plan["Node Type"] in _SCANS:
        read = plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)
        read += plan.get("Rows Removed by Index Recheck", 0)
        name = plan.get("Index Name") or plan.get("Relation Name") or plan["Node Type"]
        yield name, read * plan["Actual Loops"]
    for child in plan.get("Plans", ()):
        yield from scans(child)


def wide_scans(connection: Connection, reads: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Each scan of the statements' generic plans that read more than `ROWS_PER_SCAN` rows."""
    wide = []
    for statement, parameters in list(reads):
        for name, rows in scans(generic_plan(connection, statement, parameters)):
            if rows > ROWS_PER_SCAN:
                wide.append(f"{name}: {rows} rows in\n{statement}")
    return wide


def test_an_accruals_reads_touch_only_its_members_rows_under_generic_plans(
    app: Flask,
    client: FlaskClient,
    connection: Connection,
    make_headers: Callable[..., dict[str, str]],
    programme: None,
    reads: list[tuple[str, dict[str, Any]]],
) -> None:
    headers = make_headers("points:accrue", "members:write")

    def enroll(external_id: str) -> str:
        return _enroll(client, headers, external_id)

    def accrue(member_id: str, order_id: str) -> None:
        _accrue(client, headers, member_id, order_id, items=[SHOES])

    for n in range(OTHER_MEMBERS):
        accrue(enroll(f"plans-other-{n}"), f"plans-{n}")
    # Many more orders of theirs, placed today, earning nothing (no entry, no lot: the ledger
    # stays consistent), copied from theirs.
    connection.exec_driver_sql(
        "INSERT INTO orders (id, channel_id, client_id, order_id, member_id, wallet_id, total,"
        " currency, items, placed_at, points, points_reversed, amount_refunded, activates_at,"
        " breakdown, request_hash, response, created_at)"
        " SELECT 'ord_plans_' || n, o.channel_id, o.client_id, 'plans-copy-' || n, o.member_id,"
        " o.wallet_id, o.total, o.currency, o.items, o.placed_at - n * interval '1 ms', 0, 0,"
        " 0, o.activates_at, o.breakdown, o.request_hash, o.response, o.created_at"
        " FROM generate_series(1, %(count)s) AS n"
        " JOIN (SELECT *, row_number() OVER (ORDER BY id) - 1 AS k FROM orders) AS o"
        " ON o.k = n %% %(members)s",
        {"count": OTHER_ORDERS, "members": OTHER_MEMBERS},
    )
    # Counted in their wallets' spend and order count, as the service counts them.
    connection.exec_driver_sql(
        "UPDATE wallets AS w SET spend = w.spend + c.money, order_count = w.order_count + c.n"
        " FROM (SELECT wallet_id, sum(total)::numeric / 100 AS money,"
        " count(*) FILTER (WHERE total > 0) AS n FROM orders"
        " WHERE starts_with(id, 'ord_plans_') AND currency = 'USD' GROUP BY wallet_id) AS c"
        " WHERE c.wallet_id = w.id"
    )
    # And their check-ins, today: the lock's read of the member's last activity goes over
    # the member's events too (with no events at all, any scan of them reads no row).
    connection.exec_driver_sql(
        "INSERT INTO community_events (id, channel_id, client_id, event_id, member_id, type,"
        " occurred_at, local_date, properties, points, request_hash, response, created_at)"
        " SELECT 'evt_plans_' || n, o.channel_id, o.client_id, 'plans-event-' || n,"
        " o.member_id, 'check_in', o.placed_at - n * interval '1 ms', o.placed_at::date,"
        " '{}', 0, o.request_hash, '{}', o.created_at"
        " FROM generate_series(1, %(count)s) AS n"
        " JOIN (SELECT *, row_number() OVER (ORDER BY id) - 1 AS k FROM orders"
        " WHERE id NOT LIKE 'ord_plans_%%') AS o ON o.k = n %% %(members)s",
        {"count": OTHER_ORDERS, "members": OTHER_MEMBERS},
    )
    # And their redemptions (rows only: what is read is whose they are and when).
    connection.exec_driver_sql(
        "INSERT INTO redemptions (id, wallet_id, member_id, points, entry_id, created_at)"
        " SELECT 'red_plans_' || n, e.wallet_id, e.member_id, 1, e.id,"
        " e.created_at - n * interval '1 ms'"
        " FROM generate_series(1, %(count)s) AS n"
        " JOIN (SELECT *, row_number() OVER (ORDER BY id) - 1 AS k FROM ledger_entries) AS e"
        " ON e.k = n %% %(members)s",
        {"count": OTHER_ORDERS, "members": OTHER_MEMBERS},
    )
    member = enroll("plans-member")
    accrue(member, "plans-first")
    accrue(member, "plans-second")
    connection.exec_driver_sql("ANALYZE")  # the statistics a running database would have
    reads.clear()
    accrue(member, "plans-third")

    # The wallet's lock (with the tier row and the last activity), the caps, the badge's
    # measure with its progress row.
    assert any("FOR UPDATE OF wallets" in statement for statement, _ in reads)
    assert any("badge_progress" in statement for statement, _ in reads)
    wide = wide_scans(connection, reads)
    assert not wide, "\n\n".join(wide)


def test_a_members_ledger_page_reads_only_their_entries_under_generic_plans(
    app: Flask,
    client: FlaskClient,
    connection: Connection,
    make_headers: Callable[..., dict[str, str]],
    reads: list[tuple[str, dict[str, Any]]],
) -> None:
    """The member's ledger page, newest first, the member's entries the oldest of all.

    (Their points over a period, which tiers on a rolling window ask on every accrual, are
    read through the wallet too; not checked here: on tables this small a generic plan's
    guess for a period, 0.5 % of the rows, ties with the wallet's share.)"""
    headers = make_headers("points:accrue", "members:write", "members:read")

    def enroll(external_id: str) -> str:
        return _enroll(client, headers, external_id)

    def accrue(member_id: str, order_id: str) -> None:
        _accrue(client, headers, member_id, order_id)

    member = enroll("ledger-member")
    accrue(member, "ledger-first")
    accrue(member, "ledger-second")
    for n in range(OTHER_MEMBERS):
        other = enroll(f"ledger-other-{n}")
        for number in range(3):
            accrue(other, f"ledger-{n}-{number}")
    connection.exec_driver_sql("ANALYZE")
    reads.clear()
    page = client.get(f"/v1/members/{member}/ledger?limit=10", headers=headers)
    assert page.status_code == 200 and page.json is not None, page.json
    assert [item["points"] for item in page.json["items"]] == [20, 20]

    assert reads
    wide = wide_scans(connection, reads)
    assert not wide, "\n\n".join(wide)


MEMBER_READS = [
    "",
    "/badges",
    "/balance",
    "/claims",
    "/leaderboard-profile",
    "/ledger",
    "/orders",
    "/perks",
    "/referrals",
    "/rewards",
    "/tier",
    "/tier/history",
]


def test_a_members_pages_read_only_their_rows_under_generic_plans(
    app: Flask,
    client: FlaskClient,
    connection: Connection,
    make_headers: Callable[..., dict[str, str]],
    programme: None,
    reads: list[tuple[str, dict[str, Any]]],
) -> None:
    """Every page about one member, on a database where others have orders, tiers, badges."""
    headers = make_headers(*SCOPES)

    def enroll(external_id: str) -> str:
        return _enroll(client, headers, external_id)

    def accrue(member_id: str, order_id: str, total: int) -> None:
        _accrue(client, headers, member_id, order_id, total=total)

    member = enroll("pages-member")
    accrue(member, "pages-first", 30000)
    accrue(member, "pages-second", 80000)
    for n in range(OTHER_MEMBERS):
        other = enroll(f"pages-other-{n}")
        for number in range(3):
            accrue(other, f"pages-{n}-{number}", 40000)
    connection.exec_driver_sql("ANALYZE")

    wide = []
    for page in MEMBER_READS:
        reads.clear()
        answer = client.get(f"/v1/members/{member}{page}", headers=headers)
        assert answer.status_code == 200, (page, answer.json)
        assert reads, page
        wide += [f"GET {page or '/'}: {scan}" for scan in wide_scans(connection, reads)]
    assert not wide, "\n\n".join(wide)
