"""``loyalty demo``: a ready-to-try service on SQLite with a demo programme and an API client."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from dateutil.relativedelta import relativedelta
from flask import Flask
from sqlalchemy.orm import Session
from werkzeug.serving import run_simple

from loyalty import create_app, jobs, schema
from loyalty.auth import service as auth_service
from loyalty.auth.models import ApiClient
from loyalty.auth.rules import SCOPES
from loyalty.clock import FrozenClock, use_clock
from loyalty.db import get_session
from loyalty.earning import service as earning_service
from loyalty.ledger import service as ledger_service
from loyalty.members import service as member_service
from loyalty.rewards import service as rewards_service
from loyalty.tiers import service as tiers_service

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
        seed_programme(session)
        seed_members(session)
        seed_history(app, session)
        jobs.run_due(session, batch_size=500)  # and the tiers' and rewards' due work

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


# (code, name, rank, lifetime points to qualify, multiplier, benefits)
DEMO_TIERS = (
    ("member", "Member", 1, 0, "1", "Points on every order, birthday gift"),
    ("silver", "Silver", 2, 300, "1.1", "10% more points, free shipping"),
    ("gold", "Gold", 3, 700, "1.25", "25% more points, free shipping, early access to sales"),
    ("platinum", "Platinum", 4, 2000, "1.5", "50% more points, exclusive 15% discount"),
)


def seed_programme(session: Session) -> None:
    """The demo programme's rules: a 4-tier ladder on lifetime points, category multipliers,
    gift cards excluded, a campaign for Gold and Platinum members this month and a comeback
    bonus for silent members. Runs once (when the ladder is empty)."""
    if tiers_service.ladder(session):
        return
    tiers_service.update_policy(
        session,
        changes={"metric": "points", "window": "lifetime", "grace_days": 30},
        actor="demo",
    )
    for code, name, rank, threshold, multiplier, benefits in DEMO_TIERS:
        tiers_service.create_tier(
            session,
            code=code,
            name=name,
            rank=rank,
            threshold=threshold,
            points_multiplier=Decimal(multiplier),
            benefits=benefits,
            actor="demo",
        )
    earning_service.update_earning_settings(
        session, changes={"excluded_categories": ["gift-cards"], "daily_cap": 5000}, actor="demo"
    )
    for category, multiplier in (("shoes", "2"), ("outdoor", "1.5")):
        earning_service.create_multiplier(
            session, scope="category", match=category, multiplier=Decimal(multiplier), actor="demo"
        )
    today = dt.datetime.now(dt.UTC)
    month = dt.datetime(today.year, today.month, 1, tzinfo=dt.UTC)
    earning_service.create_campaign(
        session,
        actor="demo",
        name=f"Double Points {month:%B} for Gold and Platinum",
        starts_at=month,
        ends_at=month + relativedelta(months=1),
        target="tiers",
        target_values=["gold", "platinum"],
        multiplier=Decimal(2),
        budget=50_000,
    )
    earning_service.create_campaign(
        session,
        actor="demo",
        name="We miss you",
        description="A welcome-back bonus on the next order of silent and churned members",
        starts_at=month - relativedelta(months=1),
        ends_at=month + relativedelta(months=6),
        target="stages",
        target_values=["silent", "churned"],
        bonus_points=100,
        budget=10_000,
    )
    seed_rewards(session)


def seed_rewards(session: Session) -> None:
    """The demo's perks (per tier) and reward catalogue."""
    coffee = rewards_service.create_reward(
        session,
        actor="demo",
        kind="free_product",
        name="Free coffee beans",
        description="A 250 g bag of house roast",
        points_cost=150,
        sku="BEANS-250",
        stock=200,
        per_member_limit=2,
    )
    rewards_service.create_reward(
        session,
        actor="demo",
        kind="fixed_discount",
        name="5 off your next order",
        points_cost=250,
        amount=500,
        currency="USD",
    )
    rewards_service.create_reward(
        session,
        actor="demo",
        kind="percentage_discount",
        name="20% off one order",
        description="For Gold and Platinum members",
        points_cost=600,
        percent=20,
        tier_codes=["gold", "platinum"],
        per_member_limit=1,
        coupon_valid_days=14,
    )
    rewards_service.create_reward(
        session,
        actor="demo",
        kind="custom",
        name="Meet the roaster",
        description="A tasting evening for two; 10 seats",
        points_cost=1500,
        stock=10,
        per_member_limit=1,
        tier_codes=["platinum"],
    )
    all_tiers = [code for code, *_ in DEMO_TIERS]
    perks: tuple[tuple[str, str, list[str], dict[str, Any]], ...] = (
        (
            "birthday_gift",
            "Birthday gift",
            all_tiers,
            {"bonus_points": 100, "reward_id": coffee.id},
        ),
        ("free_shipping", "Free shipping", ["silver", "gold", "platinum"], {}),
        ("early_access", "Early access to sales", ["gold", "platinum"], {}),
        ("exclusive_discount", "15% members' discount", ["platinum"], {"percent": 15}),
    )
    for kind, name, tiers, values in perks:
        rewards_service.create_perk(
            session, actor="demo", kind=kind, name=name, tier_codes=tiers, **values
        )


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
DEMO_CATEGORIES = ("apparel", "apparel", "shoes", "outdoor", "books", "gift-cards")


def seed_history(app: Flask, session: Session) -> None:
    """Give the demo members a few years of orders, redemptions, checkouts with held points,
    refunds and expired points, replayed in time order with a controlled clock.

    Runs once: when the first demo order already exists, the history is there.
    """
    now = dt.datetime.now(dt.UTC)
    rng = random.Random(20261122)
    basket = random.Random(7)  # what the orders contain (a stream of its own)
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
                        "category": basket.choice(DEMO_CATEGORIES),
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
            items=[
                {
                    "sku": f"{data['category'].upper()}-{data['total']}",
                    "category": data["category"],
                    "quantity": 1,
                    "unit_price": data["total"],
                }
            ],
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
