"""The job's plain settlement in one statement (PostgreSQL): a batch's activations and expiries
by date, their entries, allocations, lot and wallet changes, and what the subscribers of
their events do (`ports.InBulk`), written by PostgreSQL from the lots, with no Python a lot.

`due._settle_plainly` does the same work a lot at a time in Python, on SQLite and whenever a
subscriber of `OrderActivated` or `PointsExpired` has no bulk form; tests hold the two equal
row for row (tests/ledger/test_settle_in_bulk.py).
"""

from __future__ import annotations

import datetime as dt
from functools import cache

from sqlalchemy import text
from sqlalchemy.orm import Session

from loyalty import bus
from loyalty.ledger import events, ports
from loyalty.ledger.models import Lot, Wallet
from loyalty.ledger.service._core import ACTIVATION_REASON, EXPIRY_REASON

# The settlement: the batch's wallets in the order given (``w``); the lots activating (``act``)
# and expiring (``exp``: live lots past their expiry date, and activating ones already past
# it); every entry in the order `_settle_plainly` writes them, each wallet's activations by
# (activates_at, lot), then its expiries by (expires_at, lot), with the running balances
# (``numbered``); entry ids drawn from the sequence and handed out in ascending order
# (a wallet's entries are in id order); the rows; and what the events tell (``told``).
_SETTLE = """
w AS (
    SELECT w.id, w.member_id, w.available, w.pending, w.held, given.ord
    FROM unnest(CAST(:wallet_ids AS varchar[])) WITH ORDINALITY AS given(id, ord)
    JOIN wallets w ON w.id = given.id
),
act AS (
    SELECT l.id AS lot_id, l.wallet_id, l.remaining AS points, l.activates_at, l.expires_at,
           o.order_id
    FROM lots l LEFT JOIN orders o ON o.id = l.order_pk
    WHERE l.wallet_id = ANY(CAST(:wallet_ids AS varchar[]))
      AND l.activated_at IS NULL AND l.activates_at <= :settled_now
),
exp AS (
    SELECT l.id AS lot_id, l.wallet_id, l.remaining AS points, l.expires_at
    FROM lots l
    WHERE l.wallet_id = ANY(CAST(:wallet_ids AS varchar[]))
      AND l.activated_at IS NOT NULL AND l.expired_at IS NULL
      AND l.remaining > 0 AND l.expires_at <= :settled_now
    UNION ALL
    SELECT lot_id, wallet_id, points, expires_at FROM act
    WHERE points > 0 AND expires_at <= :settled_now
),
moves AS (
    SELECT wallet_id, 1 AS phase, activates_at AS at, lot_id, 'activation' AS kind,
           points, points AS available, -points AS pending, order_id
    FROM act WHERE points <> 0
    UNION ALL
    SELECT wallet_id, 2, expires_at, lot_id, 'expiry', -points, -points, 0, NULL
    FROM exp
),
numbered AS (
    SELECT m.*, w.member_id,
           row_number() OVER (ORDER BY w.ord, m.phase, m.at, m.lot_id) AS n,
           CAST(w.available + sum(m.available) OVER run AS bigint) AS balance_available,
           CAST(w.pending + sum(m.pending) OVER run AS bigint) AS balance_pending,
           w.held AS balance_held
    FROM moves m JOIN w ON w.id = m.wallet_id
    WINDOW run AS (PARTITION BY m.wallet_id ORDER BY m.phase, m.at, m.lot_id
                   ROWS UNBOUNDED PRECEDING)
),
entry_ids AS (
    SELECT id, row_number() OVER (ORDER BY id) AS n
    FROM (SELECT nextval((SELECT pg_get_serial_sequence('ledger_entries', 'id'))) AS id
          FROM numbered) AS drawn
),
entries AS (
    INSERT INTO ledger_entries (id, wallet_id, member_id, kind, points, available_delta,
        pending_delta, held_delta, debt_delta, earned_delta, counter_account, counter_amount,
        reference_type, reference_id, reason, actor, balance_available, balance_pending,
        balance_held, created_at)
    SELECT e.id, m.wallet_id, m.member_id, m.kind, m.points, m.available, m.pending, 0, 0, 0,
           CASE m.kind WHEN 'expiry' THEN 'expiry' END, -(m.available + m.pending),
           CASE WHEN m.kind = 'expiry' THEN 'lot' WHEN m.order_id IS NOT NULL THEN 'order' END,
           CASE WHEN m.kind = 'expiry' THEN CAST(m.lot_id AS text) ELSE m.order_id END,
           CASE m.kind WHEN 'expiry' THEN :expiry_reason ELSE :activation_reason END,
           :actor, m.balance_available, m.balance_pending, m.balance_held, :settled_now
    FROM numbered m JOIN entry_ids e USING (n)
    RETURNING 1
),
allocated AS (
    INSERT INTO allocations (entry_id, lot_id, points)
    SELECT e.id, m.lot_id, -m.points
    FROM numbered m JOIN entry_ids e USING (n)
    WHERE m.kind = 'expiry'
    RETURNING 1
),
marks AS (
    SELECT lot_id, bool_or(expiring) AS expiring
    FROM (SELECT lot_id, false AS expiring FROM act
          UNION ALL SELECT lot_id, true FROM exp) AS both_kinds
    GROUP BY lot_id
),
lots_moved AS (
    UPDATE lots SET
        activated_at = coalesce(lots.activated_at, :settled_now),
        remaining = CASE WHEN marks.expiring THEN 0 ELSE lots.remaining END,
        expired_at = CASE WHEN marks.expiring THEN :settled_now ELSE lots.expired_at END
    FROM marks WHERE lots.id = marks.lot_id
    RETURNING 1
),
wallets_moved AS (
    UPDATE wallets SET
        available = wallets.available + moved.available,
        pending = wallets.pending + moved.pending,
        updated_at = CASE WHEN moved.entries > 0 THEN :settled_now ELSE wallets.updated_at END,
        next_due_at = moved.next_due_at
    FROM (
        SELECT w.id, coalesce(sum(m.available), 0) AS available,
               coalesce(sum(m.pending), 0) AS pending, count(m.kind) AS entries,
               least(
                   (SELECT min(l.activates_at) FROM lots l
                    WHERE l.wallet_id = w.id AND l.activated_at IS NULL
                      AND l.activates_at > :settled_now),
                   (SELECT min(l.expires_at) FROM lots l
                    WHERE l.wallet_id = w.id AND l.expired_at IS NULL AND l.remaining > 0
                      AND (l.activated_at IS NOT NULL OR l.activates_at <= :settled_now)
                      AND l.expires_at > :settled_now),
                   (SELECT min(h.expires_at) FROM holds h
                    WHERE h.wallet_id = w.id AND h.status = 'held')
               ) AS next_due_at
        FROM w LEFT JOIN moves m ON m.wallet_id = w.id
        GROUP BY w.id
    ) AS moved
    WHERE wallets.id = moved.id
    RETURNING 1
),
told AS (
    SELECT n AS position, member_id, 'order_activated' AS event, order_id, points,
           CAST(NULL AS text) AS reason, balance_available, balance_pending, balance_held
    FROM numbered WHERE kind = 'activation' AND order_id IS NOT NULL
    UNION ALL
    SELECT n, member_id, 'points_expired', NULL, expired, 'expiry_date',
           balance_available, balance_pending, balance_held
    FROM (SELECT numbered.*, CAST(-sum(points) OVER mine AS bigint) AS expired,
                 row_number() OVER (mine ORDER BY n DESC) AS latest
          FROM numbered WHERE kind = 'expiry'
          WINDOW mine AS (PARTITION BY wallet_id)) AS expiries
    WHERE latest = 1
)"""

# What the statement answers: its rows, and the members with an order activated (whatever it
# activated: an `OrderActivated` is told for an order's lot of 0 points too), in the order
# the wallets were given, which is the order their events are told in one at a time.
_ANSWER = """
SELECT (SELECT count(*) FROM entries) AS entries,
       (SELECT count(*) FROM allocated) AS allocations,
       (SELECT count(*) FROM lots_moved) AS lots,
       ARRAY(SELECT w.member_id FROM w
             WHERE EXISTS (SELECT FROM act
                           WHERE act.wallet_id = w.id AND act.order_id IS NOT NULL)
             ORDER BY w.ord) AS activated"""


def forms() -> tuple[ports.InBulk, ...] | None:
    """The bulk forms of every subscriber of the job's activations and expiries, in the
    order they run, or None when one has none (its events must then be published one by
    one)."""
    plugged = {form.subscriber: form for form in ports.in_bulk.all}
    wanted = bus.subscribers(events.OrderActivated) + bus.subscribers(events.PointsExpired)
    if any(subscriber not in plugged for subscriber in wanted):
        return None
    return tuple(plugged[subscriber] for subscriber in dict.fromkeys(wanted))


@cache
def _statement(plugged: tuple[ports.InBulk, ...]) -> str:
    clauses = [_SETTLE, *(form.clause() for form in plugged if form.clause)]
    notices = [form.notices() for form in plugged if form.notices]
    answer = _ANSWER + "".join(f",\n       {notice}" for notice in notices)
    return "WITH " + ",\n".join(clauses) + answer


def settle(
    session: Session,
    wallets: list[Wallet],
    plugged: tuple[ports.InBulk, ...],
    now: dt.datetime,
    actor: str | None,
) -> None:
    """`due._settle_plainly` of ``wallets`` (locked, plainly due) in one statement, with
    ``plugged`` (`forms`) doing their events' part in it, and after it (``activated``)."""
    if not wallets:
        return
    parameters = {
        "wallet_ids": [wallet.id for wallet in wallets],
        ports.SETTLED_NOW: now,
        "actor": actor,
        "activation_reason": ACTIVATION_REASON,
        "expiry_reason": EXPIRY_REASON,
    }
    for form in plugged:
        if form.parameters:
            parameters |= form.parameters(session)
    answer = session.execute(text(_statement(plugged)), parameters).one()
    # What this session holds of the wallets and their lots is stale now.
    for wallet in wallets:
        session.expire(wallet)
    for state in list(session.identity_map.all_states()):
        if state.class_ is Lot and state.obj() is not None:
            session.expire(state.obj())
    for form in plugged:
        if form.activated and answer.activated:
            form.activated(session, list(answer.activated), actor)
