-- pgbench script for benchmarks/orders.py --sql-ceiling: one accrual as plain SQL, the common
-- case of POST /v1/orders with no Python at all (the same rows as the service writes: an
-- accrual entry, the order, its lot, the wallet's balances), in 4 round trips: BEGIN, lock the
-- wallet, one WITH statement, COMMIT. Its TPS is the most the database can accrue on this
-- machine with this schema. Members are bench-000000 ... (the benchmark enrolls them), each
-- with a wallet; `members` is set with pgbench -D members=N.
\set n random(0, :members - 1)
BEGIN;
SELECT w.id AS wallet_id, w.available, w.pending, w.held, m.id AS member_id
FROM members m JOIN wallets w ON w.member_id = m.id
WHERE m.external_id = 'bench-' || lpad(:n::text, 6, '0')
FOR UPDATE OF w \gset
WITH e AS (
  INSERT INTO ledger_entries (wallet_id, member_id, kind, points, available_delta,
    pending_delta, held_delta, debt_delta, earned_delta, counter_account, counter_amount,
    reference_type, reference_id, actor, balance_available, balance_pending, balance_held,
    created_at)
  VALUES (':wallet_id', ':member_id', 'accrual', 123, 0, 123, 0, 0, 123, 'issuance', -123,
    'order', 'c' || replace(gen_random_uuid()::text, '-', ''), 'sql-ceiling', :available,
    :pending + 123, :held, now())
  RETURNING id, reference_id
), o AS (
  INSERT INTO orders (id, client_id, order_id, member_id, wallet_id, total, currency, items,
    placed_at, points, points_reversed, amount_refunded, activates_at, entry_id, request_hash,
    response, created_at)
  SELECT 'ord_' || e.reference_id, 'sql-ceiling', e.reference_id, ':member_id', ':wallet_id',
    12345, 'USD', '[]'::jsonb, now(), 123, 0, 0, now() + interval '14 days', e.id,
    repeat('0', 64), '{"points": 123, "status": "pending"}'::jsonb, now()
  FROM e
  RETURNING id, entry_id
), l AS (
  INSERT INTO lots (wallet_id, entry_id, order_pk, amount, remaining, activates_at,
    activated_at, expires_at, created_at)
  SELECT ':wallet_id', o.entry_id, o.id, 123, 123, now() + interval '14 days', NULL,
    now() + interval '3 years', now()
  FROM o
)
UPDATE wallets SET pending = pending + 123, lifetime_earned = lifetime_earned + 123,
  last_activity_at = now(), updated_at = now(),
  next_due_at = least(next_due_at, now() + interval '14 days')
WHERE id = ':wallet_id';
END;
