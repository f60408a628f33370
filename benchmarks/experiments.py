"""What the suggestions in benchmarks/README.md would gain, measured before anyone changes
loyalty/: the service's WSGI app with some of them applied by patching, in the benchmark's
processes only. Nothing here is meant for production, and nothing in loyalty/ is changed.

    python benchmarks/orders.py --experiments cache_principal,no_pre_ping,...
    python benchmarks/request_cpu.py --experiments all

Experiments (comma-separated names, or "all"):

* ``cache_principal``: remember for 5 s that an API client is not revoked, instead of a
  SELECT (in its own transaction: pre-ping, BEGIN, SELECT, ROLLBACK) on every request;
* ``no_pre_ping``: no ``pool_pre_ping`` (a ";" round trip at every pool checkout);
* ``cache_settings``: keep the programme settings row for 5 s instead of a SELECT per accrual;
* ``core_accrual``: the common case of POST /v1/orders (no items, no placed_at, the wallet
  exists, nothing due, no debt, points > 0) as two SQL statements with SQLAlchemy Core: one
  SELECT that locks the wallet (joined to the member, with the order-exists check), one
  INSERT ... INSERT ... INSERT ... UPDATE in a single WITH statement. Everything else goes to
  the real `accrue_order`. A prototype to measure; `loyalty ledger verify` still checks it.
* ``no_ledger``: the framework's floor: `accrue_order` answers a canned result and writes
  nothing (authentication, parsing and the response remain), so orders.py skips its ledger
  checks. What gunicorn, Flask, flask-smorest and JWT cost with no ledger work at all.

gunicorn loads it as ``benchmarks.experiments:app`` from the repository root, with the names
in LOYALTY_BENCH_EXPERIMENTS.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from typing import Any

from flask import Flask

from loyalty import create_app

TTL_SECONDS = 5.0
ENV = "LOYALTY_BENCH_EXPERIMENTS"


def cache_principal(app: Flask) -> None:
    from loyalty.auth import service

    original = service.principal_for_token
    checked: dict[str, float] = {}

    def principal_for_token(session: Any, *, client_id: str, scope: str) -> Any:
        now = time.monotonic()
        if now - checked.get(client_id, -TTL_SECONDS) >= TTL_SECONDS:
            principal = original(session, client_id=client_id, scope=scope)  # raises if revoked
            checked[client_id] = now
            return principal
        return service.Principal(client_id=client_id, scopes=tuple(scope.split()))

    service.principal_for_token = principal_for_token  # type: ignore[assignment]


def no_pre_ping(app: Flask) -> None:
    from loyalty.db import get_database

    get_database(app).engine.pool._pre_ping = False


def cache_settings(app: Flask) -> None:
    from loyalty.ledger import service
    from loyalty.ledger.models import ProgramSettings

    original = service.get_settings
    cached: list[Any] = []  # [(loaded_at, settings)]

    def get_settings(session: Any) -> Any:
        now = time.monotonic()
        if not cached or now - cached[0][0] >= TTL_SECONDS:
            settings = original(session)
            # A detached copy: the request's session may change the one it loaded.
            copy = ProgramSettings(
                **{c.key: getattr(settings, c.key) for c in settings.__table__.columns}
            )
            cached[:] = [(now, copy)]
        return cached[0][1]

    # Where the name is used: the package re-exports it, and each of its modules that reads
    # the settings imported it from `service.settings`.
    for module in (service, *vars(service).values()):
        if getattr(module, "get_settings", None) is original:
            module.get_settings = get_settings  # type: ignore[attr-defined]


class _UncommonCaseError(Exception):
    """Not the common case: roll back and let the real accrue_order do it."""


_LOCK = """
SELECT m.status, w.id AS wallet_id, w.available, w.pending, w.held, w.debt,
       w.lifetime_earned, w.next_due_at,
       EXISTS (SELECT 1 FROM orders o WHERE o.client_id = :client_id AND o.order_id = :order_id)
         AS seen
FROM members m JOIN wallets w ON w.member_id = m.id
WHERE m.id = :member_id
FOR UPDATE OF w
"""

_WRITE = """
WITH e AS (
  INSERT INTO ledger_entries (wallet_id, member_id, kind, points, available_delta,
    pending_delta, held_delta, debt_delta, earned_delta, counter_account, counter_amount,
    reference_type, reference_id, actor, balance_available, balance_pending, balance_held,
    created_at)
  VALUES (:wallet_id, :member_id, 'accrual', :points, :available_delta, :pending_delta, 0, 0,
    :points, 'issuance', -:points, 'order', :order_id, :actor, :available, :pending, :held, :now)
  RETURNING id
), o AS (
  INSERT INTO orders (id, client_id, order_id, member_id, wallet_id, total, currency, items,
    placed_at, points, points_reversed, amount_refunded, activates_at, entry_id, request_hash,
    response, created_at)
  SELECT :order_pk, :client_id, :order_id, :member_id, :wallet_id, :total, :currency,
    '[]'::jsonb, :now, :points, 0, 0, :activates_at, e.id, :request_hash,
    CAST(:response AS jsonb), :now
  FROM e
  RETURNING id, entry_id
), l AS (
  INSERT INTO lots (wallet_id, entry_id, order_pk, amount, remaining, activates_at,
    activated_at, expires_at, created_at)
  SELECT :wallet_id, o.entry_id, o.id, :points, :points, :activates_at, :activated_at,
    :expires_at, :now
  FROM o
)
UPDATE wallets SET available = :available, pending = :pending,
  lifetime_earned = :lifetime_earned, last_activity_at = :now, updated_at = :now,
  next_due_at = :next_due_at
WHERE id = :wallet_id
"""


def core_accrual(app: Flask) -> None:
    from sqlalchemy import text

    from loyalty import clock
    from loyalty.db import new_id, retrying, unit_of_work
    from loyalty.ledger import rules, service

    original = service.accrue_order
    lock, write = text(_LOCK), text(_WRITE)

    @retrying
    def accrue_order(
        session: Any,
        *,
        client_id: str,
        order_id: str,
        member_id: str,
        total: int,
        currency: str,
        items: list[dict[str, Any]] | None = None,
        placed_at: dt.datetime | None = None,
        actor: str | None = None,
    ) -> Any:
        def fallback() -> Any:
            return original.__wrapped__(  # type: ignore[attr-defined]
                session,
                client_id=client_id,
                order_id=order_id,
                member_id=member_id,
                total=total,
                currency=currency,
                items=items,
                placed_at=placed_at,
                actor=actor,
            )

        exponent = rules.currency_exponent(currency)
        if items or placed_at is not None or exponent is None:
            return fallback()
        currency = currency.upper()
        fingerprint = rules.request_fingerprint(
            "order",
            order_id,
            {
                "member_id": member_id,
                "total": total,
                "currency": currency,
                "items": [],
                "placed_at": None,
            },
        )
        try:
            with unit_of_work(session):
                connection = session.connection()
                row = connection.execute(
                    lock, {"member_id": member_id, "client_id": client_id, "order_id": order_id}
                ).first()
                now = clock.now()
                if (
                    row is None
                    or row.seen
                    or row.status != "active"
                    or row.debt
                    or (row.next_due_at is not None and row.next_due_at <= now)
                ):
                    raise _UncommonCaseError
                settings = service.get_settings(session)
                points = rules.points_for_amount(
                    total, exponent, settings.earn_rate, settings.rounding
                )
                if points <= 0:
                    raise _UncommonCaseError
                activates_at = now + dt.timedelta(days=settings.pending_days)
                pending = activates_at > now
                expires_at = rules.expiry_for(
                    now, settings.expiry_policy, settings.expiry_months, settings.expiry_period
                )
                available = row.available + (0 if pending else points)
                pending_balance = row.pending + (points if pending else 0)
                due = expires_at if not pending else activates_at
                next_due = row.next_due_at
                if due is not None and (next_due is None or due < next_due):
                    next_due = due
                response = {
                    "order_id": order_id,
                    "member_id": member_id,
                    "points": points,
                    "status": "pending" if pending else "active",
                    "activates_at": activates_at.astimezone(dt.UTC)
                    .isoformat()
                    .replace("+00:00", "Z"),
                    "balance": {
                        "available": available,
                        "pending": pending_balance,
                        "held": row.held,
                    },
                }
                connection.execute(
                    write,
                    {
                        "wallet_id": row.wallet_id,
                        "member_id": member_id,
                        "client_id": client_id,
                        "order_id": order_id,
                        "order_pk": new_id("ord"),
                        "points": points,
                        "available_delta": 0 if pending else points,
                        "pending_delta": points if pending else 0,
                        "available": available,
                        "pending": pending_balance,
                        "held": row.held,
                        "lifetime_earned": row.lifetime_earned + points,
                        "actor": actor,
                        "now": now,
                        "total": total,
                        "currency": currency,
                        "activates_at": activates_at,
                        "activated_at": None if pending else now,
                        "expires_at": expires_at,
                        "next_due_at": next_due,
                        "request_hash": fingerprint,
                        "response": json.dumps(response),
                    },
                )
        except _UncommonCaseError:
            return fallback()
        return service.Replayable(response, created=True)

    service.accrue_order = accrue_order  # type: ignore[assignment]


def no_ledger(app: Flask) -> None:
    from loyalty.ledger import service

    def accrue_order(session: Any, *, order_id: str, member_id: str, total: int, **_: Any) -> Any:
        body = {
            "order_id": order_id,
            "member_id": member_id,
            "points": total // 100,
            "status": "pending",
            "activates_at": "2026-01-01T00:00:00Z",
            "balance": {"available": 0, "pending": 0, "held": 0},
        }
        return service.Replayable(body, created=True)

    service.accrue_order = accrue_order  # type: ignore[assignment]


EXPERIMENTS: dict[str, Callable[[Flask], None]] = {
    "cache_principal": cache_principal,
    "no_pre_ping": no_pre_ping,
    "cache_settings": cache_settings,
    "core_accrual": core_accrual,
    "no_ledger": no_ledger,
}
# "all": every experiment that still writes the ledger.
ALL = ["cache_principal", "no_pre_ping", "cache_settings", "core_accrual"]


def parse(names: str) -> list[str]:
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    if "all" in chosen:
        chosen = ALL + [n for n in chosen if n not in ALL and n != "all"]
    unknown = [n for n in chosen if n not in EXPERIMENTS]
    if unknown:
        raise SystemExit(f"unknown experiments {unknown}; known: {', '.join(EXPERIMENTS)}")
    return chosen


def apply(app: Flask, names: list[str]) -> Flask:
    for name in names:
        EXPERIMENTS[name](app)
    return app


if os.environ.get(ENV) is not None:  # loaded by gunicorn
    app = apply(create_app(), parse(os.environ[ENV]))
