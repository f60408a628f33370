"""What one accrual costs in SQL round trips, counted (not timed): the guard against a change
that quietly adds statements to the hot path."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.ledger import service
from tests.ledger.conftest import balance, order

# No programme configured: the wallet lock (with the member, the configuration's version and
# whether the order is new), one statement for the order's entry, the order, its lot, the
# wallet's update and the order's outbox row (with the transaction's NOTIFY). Authentication,
# the core settings and the programme's configuration come from the process's caches. (14
# before issue 11, 7 before the accrual's rows went in one statement, 4 before the order
# check went with the lock, 3 before the outbox row went with the rows.)
PLAIN_ACCRUAL = 2
# psycopg converts a statement's placeholders once and keeps the result only for statements
# of at most this many parameters and characters (psycopg/_queries.py); longer ones are parsed
# again on every execution.
PSYCOPG_CACHED_PARAMETERS = 50
PSYCOPG_CACHED_LENGTH = 4096
# The demo programme configured (4 tiers, category and tier multipliers, two campaigns with
# budgets, one for lifecycle stages, a daily cap, badges on spend): also the spend badge's
# metric stored with the member's levels of the badge in one statement; the member's tier
# row, last activity (the stage campaign asks analytics) and points towards the caps come
# with the lock. (25 before issue 11, 13 before the accrual's rows went in one statement, 9
# before the order check went with the lock, 8 before the tier row did, 7 before the last
# activity did, 6 before the badge's metric went with its progress row, 5 before the caps'
# points went with the lock, 4 before the outbox row went with the order's rows.)
PROGRAMME_ACCRUAL = 3
# ... and a Gold member's order, which the demo's budgeted campaign applies to: its budget
# charged in one conditional UPDATE (2 before: the campaign's row read and locked, then
# written; 6 in all).
BUDGETED_ACCRUAL = 4
# ... and one that upgrades the member's tier (its row, history, event) and awards a badge
# with bonus points (the award, the bonus's entry, lot and wallet update, their events); the
# badge's metric, its progress row and the member's levels of the badge in one statement.
# (26 before issue 11, 21 before the levels came with the progress row, 20 before the tier
# row came with the lock, 18 before the metric went with the progress row, 15 before the
# order's outbox row went with its rows (the pin was 17 until then), 14 before the new tier
# was held in the statement that locks the member's tier row, 13 before the upgrade wrote the
# row read with the lock, if unchanged, and its history in one statement.)
UPGRADE_AND_BADGE = 11
# The member with the wallet, the points expiring soon. (5 before issue 11.)
BALANCE_READ = 2
# A batch of the job activating and expiring lots of many wallets: the same statements
# whatever the number of lots or wallets (the wallets' lock, the configuration's version, the
# holds timing out, and one statement writing the entries, allocations, lots, wallets and
# outbox rows). 13 before the settlement went into one statement (the lots to activate and
# to expire, their updates, the entries' ids, the wallets' next due moments and one update of
# each wallet, the first outbox row with its NOTIFY, and three COPYs, which SQLAlchemy's
# statement events do not see); about 5 a lot before issue 11; 18 (the rows as executemany
# INSERTs, each wallet updated at two or three autoflushes) before the job's batches were
# copied in.
JOB_BATCH = 4


@contextmanager
def counting(engine: Engine) -> Iterator[list[str]]:
    """The statements sent to the database meanwhile, without the test harness's savepoints."""
    seen: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        verb = statement.split(None, 1)[0].upper()
        if verb not in {"SAVEPOINT", "RELEASE", "ROLLBACK"}:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def assert_psycopg_keeps_their_conversion(statements: list[str]) -> None:
    for statement in statements:
        names = set(re.findall(r"%\((\w+)\)s", statement))
        assert len(names) <= PSYCOPG_CACHED_PARAMETERS, statement
        assert len(statement) <= PSYCOPG_CACHED_LENGTH, statement


def test_a_plain_accrual_costs_a_fixed_number_of_statements(
    app: Flask, client: FlaskClient, engine: Engine, make_headers: Callable[..., dict[str, str]]
) -> None:
    headers = make_headers("points:accrue", "members:write")
    member = client.post("/v1/members", json={"external_id": "sql-1"}, headers=headers).json
    order = {"member_id": member["id"], "total": 1000, "currency": "USD"}
    assert client.post("/v1/orders", json={**order, "order_id": "warm"}, headers=headers)
    with counting(engine) as seen:
        answer = client.post("/v1/orders", json={**order, "order_id": "o-1"}, headers=headers)
    assert answer.status_code == 201, answer.json
    verbs = [statement.split(None, 1)[0].upper() for statement in seen]
    assert len(seen) <= PLAIN_ACCRUAL, "\n".join(seen)
    # The lock (with the order check), the entry, order, lot, wallet and outbox row in one
    # WITH (with the NOTIFY).
    assert verbs == ["SELECT", "WITH"], "\n".join(seen)
    assert "pg_notify" in seen[1] and "outbox_events" in seen[1], seen[1]


def test_an_order_that_earns_nothing_costs_as_many_statements(
    app: Flask, client: FlaskClient, engine: Engine, make_headers: Callable[..., dict[str, str]]
) -> None:
    headers = make_headers("points:accrue", "members:write")
    member = client.post("/v1/members", json={"external_id": "sql-0"}, headers=headers).json
    order = {"member_id": member["id"], "currency": "USD"}
    assert client.post(
        "/v1/orders", json={**order, "total": 1000, "order_id": "warm"}, headers=headers
    )
    with counting(engine) as seen:
        answer = client.post(
            "/v1/orders", json={**order, "total": 0, "order_id": "free"}, headers=headers
        )
    assert answer.status_code == 201, answer.json
    assert answer.json["points"] == 0
    verbs = [statement.split(None, 1)[0].upper() for statement in seen]
    # The lock (with the order check), the order with the wallet's update and the outbox
    # row in one WITH.
    assert verbs == ["SELECT", "WITH"], "\n".join(seen)
    assert "pg_notify" in seen[1] and "outbox_events" in seen[1], seen[1]
    assert len(seen) <= PLAIN_ACCRUAL


SHOES = {"sku": "shoe-1", "category": "shoes", "quantity": 1}


def the_second_order(
    client: FlaskClient,
    engine: Engine,
    headers: dict[str, str],
    external_id: str,
    first: dict[str, Any],
    second: dict[str, Any],
) -> tuple[dict[str, Any], list[str]]:
    """Enroll a member and report ``first``, then ``second`` (both in USD): what the second
    answered, and the statements it sent."""
    member = client.post("/v1/members", json={"external_id": external_id}, headers=headers).json
    order = {"member_id": member["id"], "currency": "USD"}
    warm = client.post("/v1/orders", json={**order, **first, "order_id": "o-0"}, headers=headers)
    assert warm.status_code == 201, warm.json
    with counting(engine) as seen:
        answer = client.post(
            "/v1/orders", json={**order, **second, "order_id": "o-1"}, headers=headers
        )
    assert answer.status_code == 201, answer.json
    return answer.json, seen


def test_an_accrual_with_a_whole_programme_costs_a_fixed_number_of_statements(
    app: Flask,
    client: FlaskClient,
    engine: Engine,
    make_headers: Callable[..., dict[str, str]],
    programme: None,
) -> None:
    headers = make_headers("points:accrue", "members:write")
    shoes = {"total": 5000, "items": [{**SHOES, "unit_price": 5000}]}
    answer, seen = the_second_order(client, engine, headers, "sql-2", shoes, shoes)
    assert answer["points"] == 100  # 50 USD, shoes x2: the rules applied
    assert len(seen) <= PROGRAMME_ACCRUAL, "\n".join(seen)
    assert_psycopg_keeps_their_conversion(seen)


def test_a_new_members_first_order_costs_as_many_statements_as_the_next(
    app: Flask,
    client: FlaskClient,
    engine: Engine,
    make_headers: Callable[..., dict[str, str]],
    programme: None,
) -> None:
    """The wallet is opened with the member (its enrolment's transaction), so the first
    order's lock finds it and reads what pricing needs along (11 statements when the order
    created the wallet, then read the tier row, the activity and the caps' points on its
    own)."""
    headers = make_headers("points:accrue", "members:write")
    shoes = {"total": 5000, "items": [{**SHOES, "unit_price": 5000}]}
    the_second_order(client, engine, headers, "sql-7-warm", shoes, shoes)  # the caches
    with counting(engine) as enrolment:
        member = client.post("/v1/members", json={"external_id": "sql-7"}, headers=headers).json
    assert any(statement.startswith("INSERT INTO wallets") for statement in enrolment)
    with counting(engine) as seen:
        answer = client.post(
            "/v1/orders",
            json={**shoes, "currency": "USD", "member_id": member["id"], "order_id": "first"},
            headers=headers,
        )
    assert answer.status_code == 201, answer.json
    assert answer.json["points"] == 100
    assert not any("INSERT INTO wallets" in statement for statement in seen), "\n".join(seen)
    assert len(seen) <= PROGRAMME_ACCRUAL, "\n".join(seen)


def test_an_accrual_of_a_member_in_a_tier_reads_the_tier_row_once(
    app: Flask,
    client: FlaskClient,
    engine: Engine,
    make_headers: Callable[..., dict[str, str]],
    programme: None,
) -> None:
    """Pricing and qualifying both ask for the member's tier row: the wallet's lock reads
    it in its statement, and nothing reads it again (even though nothing holds the row
    between the two)."""
    headers = make_headers("points:accrue", "members:write")
    silver = {"total": 30000}  # 300 points
    answer, seen = the_second_order(client, engine, headers, "sql-5", silver, {"total": 5000})
    assert "Silver x1.1" in answer["description"]  # priced with the tier row
    tier_reads = [statement for statement in seen if "member_tiers" in statement]
    assert len(tier_reads) == 1, "\n".join(seen)
    assert "FOR UPDATE OF wallets" in tier_reads[0], tier_reads[0]
    assert len(seen) <= PROGRAMME_ACCRUAL, "\n".join(seen)
    assert_psycopg_keeps_their_conversion(seen)


def test_a_budgeted_campaigns_charge_is_one_statement(
    app: Flask,
    client: FlaskClient,
    engine: Engine,
    make_headers: Callable[..., dict[str, str]],
    programme: None,
) -> None:
    headers = make_headers("points:accrue", "members:write")
    gold = {"total": 80000}  # 800 points
    answer, seen = the_second_order(client, engine, headers, "sql-6", gold, {"total": 5000})
    assert "Double Points" in answer["description"], answer
    campaigns = [statement for statement in seen if "campaigns" in statement]
    assert len(campaigns) == 1, "\n".join(seen)
    assert campaigns[0].startswith("UPDATE campaigns"), campaigns[0]
    assert len(seen) <= BUDGETED_ACCRUAL, "\n".join(seen)
    assert_psycopg_keeps_their_conversion(seen)


def test_an_accrual_that_upgrades_a_tier_and_awards_a_badge_costs_a_fixed_number(
    app: Flask,
    client: FlaskClient,
    engine: Engine,
    make_headers: Callable[..., dict[str, str]],
    programme: None,
) -> None:
    headers = make_headers("points:accrue", "members:write", "members:read")
    member = client.post("/v1/members", json={"external_id": "sql-3"}, headers=headers).json
    warm = {"member_id": member["id"], "total": 25000, "currency": "USD", "order_id": "warm"}
    assert client.post("/v1/orders", json=warm, headers=headers).status_code == 201
    with counting(engine) as seen:
        answer = client.post(
            "/v1/orders",
            json={"member_id": member["id"], "total": 80000, "currency": "USD", "order_id": "o"},
            headers=headers,
        )
    assert answer.status_code == 201, answer.json
    after = client.get(f"/v1/members/{member['id']}", headers=headers).json
    assert after["tier"]["code"] == "gold"  # 250 + 800 points (+100 of the badge) >= 700
    badges = client.get(f"/v1/members/{member['id']}/badges", headers=headers)
    assert "Big spender" in badges.get_data(as_text=True)  # 1,050 USD spent >= 1,000
    assert len(seen) <= UPGRADE_AND_BADGE, "\n".join(seen)


def test_a_balance_read_costs_a_fixed_number_of_statements(
    app: Flask,
    client: FlaskClient,
    engine: Engine,
    make_headers: Callable[..., dict[str, str]],
    programme: None,
) -> None:
    headers = make_headers("points:accrue", "members:write", "members:read")
    member = client.post("/v1/members", json={"external_id": "sql-4"}, headers=headers).json
    order = {"member_id": member["id"], "total": 5000, "currency": "USD", "order_id": "o"}
    assert client.post("/v1/orders", json=order, headers=headers).status_code == 201
    url = f"/v1/members/{member['id']}/balance"
    assert client.get(url, headers=headers).status_code == 200
    with counting(engine) as seen:
        answer = client.get(url, headers=headers)
    assert answer.status_code == 200, answer.json
    assert answer.json["pending"] == 50
    assert len(seen) <= BALANCE_READ, "\n".join(seen)


def test_a_batch_of_the_job_costs_statements_by_the_batch_not_by_the_lot(
    session: Session, engine: Engine, member: Callable[..., str], clock: FrozenClock
) -> None:
    service.update_settings(
        session, changes={"expiry_policy": "rolling", "expiry_months": 1}, actor="test"
    )
    members = [member() for _ in range(12)]
    for m in members:
        for number in range(3):  # each wallet: 3 lots
            order(session, m, 10000, order_id=f"{m}-{number}")
    clock.advance(dt.timedelta(days=40))  # activated after 14 days, not yet expired
    order(session, members[0], 10000, order_id="late")  # pending still
    clock.advance(dt.timedelta(days=20))  # expired a month after they activated
    with counting(engine) as seen:
        settled = service.settle_due_batch(session, batch_size=50)
    assert settled == 12
    assert service.settle_due_batch(session, batch_size=50) == 0
    kinds = [entry.kind for entry in service.list_entries(session, members[1]).items]
    assert sorted(kinds) == ["accrual"] * 3 + ["activation"] * 3 + ["expiry"] * 3
    assert balance(session, members[0]) == (100, 0, 0)  # the late order activated only
    assert len(seen) <= JOB_BATCH, "\n".join(seen)
