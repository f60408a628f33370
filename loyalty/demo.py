"""``loyalty demo``: a ready-to-try service on SQLite with a demo programme and an API client."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import secrets
from pathlib import Path
from typing import Any

import click
from flask import Flask
from sqlalchemy.orm import Session
from werkzeug.serving import run_simple

from loyalty import create_app, schema
from loyalty.auth import service as auth_service
from loyalty.auth.models import ApiClient
from loyalty.auth.rules import SCOPES
from loyalty.clock import FrozenClock, use_clock
from loyalty.db import get_session
from loyalty.ledger import service as ledger_service
from loyalty.members import service as member_service

DEMO_CLIENT_NAME = "Demo storefront"

# (external_id, name, email, time zone, birthday, days since enrolment, referred by)
DEMO_MEMBERS: tuple[tuple[str, str, str, str, dt.date, int, str | None], ...] = (
    (
        "cust-1001",
        "Ada Lovelace",
        "ada@example.com",
        "Europe/London",
        dt.date(1985, 12, 10),
        1400,
        None,
    ),
    (
        "cust-1002",
        "Grace Hopper",
        "grace@example.com",
        "America/New_York",
        dt.date(1990, 12, 9),
        420,
        "cust-1001",
    ),
    (
        "cust-1003",
        "Alan Turing",
        "alan@example.com",
        "Europe/London",
        dt.date(1992, 6, 23),
        200,
        "cust-1001",
    ),
    (
        "cust-1004",
        "Katherine Johnson",
        "katherine@example.com",
        "America/Chicago",
        dt.date(1988, 8, 26),
        90,
        "cust-1002",
    ),
    (
        "cust-1005",
        "Hedy Lamarr",
        "hedy@example.com",
        "Europe/Vienna",
        dt.date(1995, 11, 9),
        30,
        None,
    ),
    (
        "cust-1006",
        "Tu Youyou",
        "youyou@example.com",
        "Asia/Shanghai",
        dt.date(1993, 12, 30),
        3,
        "cust-1005",
    ),
    (
        "cust-1007",
        "Rosalind Franklin",
        "rosalind@example.com",
        "Europe/London",
        dt.date(1990, 7, 25),
        1500,
        None,
    ),
)
# Members who shopped in their first months and then went quiet: their points expire.
DORMANT = {"cust-1007": dt.timedelta(days=300)}


def run(*, host: str, port: int, serve: bool) -> None:
    """Migrate the demo database, make sure the demo client and members exist, print, serve."""
    instance = Path(
        Flask(
            "loyalty", instance_path=os.environ.get("LOYALTY_INSTANCE_PATH") or None
        ).instance_path
    )
    instance.mkdir(parents=True, exist_ok=True)
    app = create_app({"SECRET_KEY": _demo_secret_key(instance)})
    with app.app_context():
        schema.upgrade(schema.alembic_config(app.config["DATABASE_URL"]))
        session = get_session()
        credentials = _demo_client(session, instance / "demo-client.json")
        seed_members(session)
        seed_history(app, session)
        while ledger_service.settle_due_batch(session, batch_size=500):
            pass

    base = f"http://{host}:{port}"
    click.echo(f"Database:      {app.config['DATABASE_URL']}")
    click.echo(f"API docs:      {base}/docs")
    click.echo(f"OpenAPI:       {base}/v1/openapi.json")
    click.echo("Demo API client (all scopes):")
    click.echo(f"  export CLIENT_ID={credentials['client_id']}")
    click.echo(f"  export CLIENT_SECRET={credentials['client_secret']}")
    if serve:
        click.echo(f"Serving on {base} (Ctrl+C to stop)")
        # app.run() refuses to run under the flask CLI; call its server directly.
        run_simple(host, port, app, threaded=True)


def _demo_secret_key(instance: Path) -> str:
    """A random key kept in the instance folder, so demo tokens survive a restart."""
    path = instance / "demo-secret-key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _demo_client(session: Session, path: Path) -> dict[str, Any]:
    """Reuse the demo client saved by an earlier run if it is still valid; else create one."""
    if path.exists():
        saved = json.loads(path.read_text())
        client = session.get(ApiClient, saved.get("client_id", ""))
        if client is not None and client.active and set(client.scopes) == set(SCOPES):
            return dict(saved)
    new = auth_service.create_client(session, name=DEMO_CLIENT_NAME, scopes=SCOPES)
    credentials = {"client_id": new.client.id, "client_secret": new.secret}
    path.write_text(json.dumps(credentials))
    path.chmod(0o600)
    return credentials


def seed_members(session: Session) -> None:
    """Enrol the demo members (idempotent: enrolment is keyed on external_id)."""
    now = dt.datetime.now(dt.UTC)
    codes: dict[str, str] = {}
    for external_id, name, email, tz, birthday, days, referred_by in DEMO_MEMBERS:
        member, _created = member_service.enroll_member(
            session,
            external_id=external_id,
            name=name,
            email=email,
            timezone=tz,
            birthday=birthday,
            marketing_consent=True,
            enrolled_at=now - dt.timedelta(days=days),
            referral_code=codes.get(referred_by) if referred_by else None,
            metadata={"source": "demo"},
            actor="demo",
        )
        codes[external_id] = member.referral_code


DEMO_ORDER_CLIENT = "demo-storefront"


def seed_history(app: Flask, session: Session) -> None:
    """Give the demo members a few years of orders, redemptions, checkouts with held points,
    refunds and expired points, replayed in time order with a controlled clock.

    Runs once: when the first demo order already exists, the history is there.
    """
    now = dt.datetime.now(dt.UTC)
    rng = random.Random(20261122)
    events: list[tuple[dt.datetime, int, str, dict[str, Any]]] = []
    members = member_service.list_members(session, limit=200).items
    by_external = {m.external_id: m for m in members}
    for external_id, *_rest in DEMO_MEMBERS:
        member = by_external[external_id]
        moment = member.enrolled_at + dt.timedelta(days=1)
        until = member.enrolled_at + DORMANT.get(external_id, now - member.enrolled_at)
        number = 0
        while moment < min(until, now - dt.timedelta(hours=1)):
            number += 1
            total = rng.choice([1999, 3450, 5900, 8999, 12500, 24900])
            events.append(
                (
                    moment,
                    len(events),
                    "order",
                    {
                        "member_id": member.id,
                        "order_id": f"DEMO-{external_id}-{number:03d}",
                        "total": total,
                        "currency": rng.choice(["USD", "EUR", "GBP"]),
                        "refund": rng.random() < 0.15,
                    },
                )
            )
            later = moment + dt.timedelta(days=rng.randint(20, 40))
            if later < now:
                kind = rng.choice(["redeem", "checkout", "checkout-abandoned", "none"])
                events.append((later, len(events), kind, {"member_id": member.id}))
            moment += dt.timedelta(days=rng.randint(25, 75))

    clock = FrozenClock(events[0][0] if events else now)
    use_clock(app, clock)
    try:
        for moment, _index, kind, data in sorted(events):
            clock.set(moment)
            if not _replay_event(session, kind, data, rng):
                return
            while ledger_service.settle_due_batch(session, batch_size=500):
                pass
    finally:
        use_clock(app, None)


def _replay_event(session: Session, kind: str, data: dict[str, Any], rng: random.Random) -> bool:
    """Apply one demo event; False when the history was seeded by an earlier run."""
    member_id = data["member_id"]
    if kind == "order":
        result = ledger_service.accrue_order(
            session,
            client_id=DEMO_ORDER_CLIENT,
            order_id=data["order_id"],
            member_id=member_id,
            total=data["total"],
            currency=data["currency"],
            actor="demo",
        )
        if not result.created:
            return False
        if data["refund"]:
            ledger_service.refund_order(
                session,
                client_id=DEMO_ORDER_CLIENT,
                order_id=data["order_id"],
                refund_id=data["order_id"] + "-R",
                amount=data["total"] // 2,
                actor="demo",
            )
        return True
    available = ledger_service.get_balance(session, member_id).available
    if available < 60:
        return True
    points = rng.randint(20, min(available, 400))
    if kind == "redeem":
        ledger_service.redeem(
            session, member_id=member_id, points=points, reference="demo-reward", actor="demo"
        )
    elif kind == "checkout":
        hold = ledger_service.place_hold(
            session, member_id=member_id, points=points, reference="demo-cart", actor="demo"
        )
        ledger_service.capture_hold(
            session, hold_id=hold.hold.id, points=max(1, points - 10), actor="demo"
        )
    elif kind == "checkout-abandoned":
        hold = ledger_service.place_hold(
            session, member_id=member_id, points=points, reference="demo-cart", actor="demo"
        )
        ledger_service.release_hold(session, hold_id=hold.hold.id, actor="demo")
    return True
