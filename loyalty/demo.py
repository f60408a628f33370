"""``loyalty demo``: a ready-to-try service on SQLite with a demo programme and an API client."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import secrets
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from dateutil.relativedelta import relativedelta
from flask import Flask
from sqlalchemy import make_url
from sqlalchemy.orm import Session
from werkzeug.serving import run_simple

from loyalty import clock as loyalty_clock
from loyalty import create_app, jobs, migrator
from loyalty.auth import service as auth_service
from loyalty.auth.models import ApiClient
from loyalty.auth.rules import SCOPES
from loyalty.clock import FrozenClock, use_clock
from loyalty.community import service as community_service
from loyalty.community.models import EventType
from loyalty.db import get_session
from loyalty.earning import service as earning_service
from loyalty.ledger import service as ledger_service
from loyalty.members import service as member_service
from loyalty.members.models import Member
from loyalty.referrals import service as referrals_service
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


def run(*, host: str, port: int, serve: bool, reset: bool = False) -> None:
    """Migrate the demo database, make sure the demo client and members exist, print, serve.
    With ``reset``, remove the SQLite demo database first, so the demo starts over."""
    instance = Path(
        Flask(
            "loyalty", instance_path=os.environ.get("LOYALTY_INSTANCE_PATH") or None
        ).instance_path
    )
    instance.mkdir(parents=True, exist_ok=True)
    app = create_app({"SECRET_KEY": _demo_secret_key(instance)})
    if reset:
        for removed in remove_sqlite_database(app.config["DATABASE_URL"]):
            click.echo(f"Removed {removed}")
    with app.app_context():
        migrator.upgrade(migrator.alembic_config(app.config["DATABASE_URL"]))
        session = get_session()
        credentials = _demo_client(session, instance / "demo-client.json")
        seed_programme(session)
        seed_members(session)
        by_external = {m.external_id: m for m in member_service.list_members(session).items}
        seed_referrals(session, by_external)
        seed_history(app, session)
        jobs.run_due(session, batch_size=500)  # and the tiers' and rewards' due work
        seed_community(session, by_external)

    base = f"http://{host}:{port}"
    click.echo(f"Database:      {display_url(app.config['DATABASE_URL'])}")
    click.echo(f"API docs:      {base}/docs")
    click.echo(f"OpenAPI:       {base}/v1/openapi.json")
    click.echo("Demo API client (all scopes):")
    click.echo(f"  export CLIENT_ID={credentials['client_id']}")
    click.echo(f"  export CLIENT_SECRET={credentials['client_secret']}")
    if serve:
        click.echo(f"Serving on {base} (Ctrl+C to stop)")
        # app.run() refuses to run under the flask CLI; call its server directly.
        run_simple(host, port, app, threaded=True)


def display_url(url: str) -> str:
    """A database URL to print, its password masked."""
    return make_url(url).render_as_string(hide_password=True)


def remove_sqlite_database(url: str) -> list[Path]:
    """Delete the SQLite database file of ``url`` and its journal files; returns what was
    there. Refuses any other database: the demo does not drop a server's database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise click.ClickException(
            f"--reset only removes a SQLite demo database, not {display_url(url)}: drop and "
            "create that database yourself, then run `loyalty demo` again."
        )
    if not parsed.database or parsed.database == ":memory:":
        return []
    path = Path(parsed.database)
    files = [path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]
    removed = [file for file in files if file.exists()]
    for file in removed:
        file.unlink()
    return removed


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


def seed_referrals(session: Session, members_by_external_id: Mapping[str, Any]) -> dict[str, Any]:
    """The demo's referral terms: 500 points for the referrer and 250 for the friend on the
    friend's first order of 25.00 USD or more, at most 5 rewarded referrals a month and 50 in
    all, the referrer's tier shared for 30 days, more than 10 referrals a day held for review,
    and a shareable link. Returns each referrer's code, link and counts, for the tour."""
    referrals_service.update_settings(
        session,
        changes={
            "enabled": True,
            "min_order_total": 2500,
            "min_order_currency": "USD",
            "referrer_points": 500,
            "referee_points": 250,
            "monthly_cap": 5,
            "total_cap": 50,
            "shared_tier_days": 30,
            "velocity_limit": 10,
            "link_template": "https://shop.example/join?ref={code}",
        },
        actor="demo",
    )
    referrals_service.run_due(session)
    summary: dict[str, Any] = {}
    for external_id in ("cust-1001", "cust-1002", "cust-1005"):
        member = members_by_external_id.get(external_id)
        if member is None:
            continue
        member_id = member if isinstance(member, str) else member.id
        view = referrals_service.member_referrals(session, member_id)
        summary[external_id] = {
            "referral_code": view.referral_code,
            "link": view.link,
            "counts": view.counts,
            "points_earned": view.points_earned,
        }
    return summary


DEMO_EVENT_CLIENT = "demo-storefront"
# (external_id, days of daily check-ins up to today, reviews, recycling drop-offs in kg,
#  leaderboard display name or None)
DEMO_COMMUNITY: tuple[tuple[str, int, int, tuple[float, ...], str | None], ...] = (
    ("cust-1001", 9, 4, (3.5, 2.0, 6.25), "Ada L."),
    ("cust-1002", 31, 2, (1.5,), "Amazing Grace"),
    ("cust-1003", 3, 6, (), None),
    ("cust-1004", 7, 1, (4.0, 4.0), "KJ"),
    ("cust-1005", 2, 3, (12.0,), "Hedy"),
)


def seed_community(session: Session, members_by_external_id: dict[str, Member]) -> None:
    """Event types, event rules, badges (one a challenge for the current month) and some
    events and check-ins for the demo members, so that points, streaks, badges and a
    leaderboard show. Runs once: when the review.posted type exists, it is all there."""
    if session.get(EventType, "review.posted") is not None:
        return
    now = loyalty_clock.now()
    for name, description, properties in (
        ("review.posted", "A product review was published", {"stars": {"type": "integer"}}),
        ("check_in", "The member opened the app or visited the store", {}),
        (
            "recycling.dropped_off",
            "Packaging returned to a store for recycling",
            {"co2_kg": {"type": "number", "required": True}, "store": {"type": "string"}},
        ),
    ):
        community_service.create_event_type(
            session, name=name, description=description, properties=properties, actor="demo"
        )
    community_service.create_event_rule(
        session, event_type="review.posted", points=10, cap=5, cap_period="month", actor="demo"
    )
    community_service.create_event_rule(
        session, event_type="check_in", points=2, cap=1, cap_period="day", actor="demo"
    )
    community_service.create_event_rule(
        session,
        event_type="recycling.dropped_off",
        points=5,
        per_unit_property="co2_kg",
        points_per_unit="2",
        actor="demo",
    )
    community_service.update_settings(session, changes={"streak_grace_days": 1}, actor="demo")

    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (month_start + dt.timedelta(days=32)).replace(day=1)
    badges: list[dict[str, Any]] = [
        {
            "name": "Reviewer",
            "description": "Share what you think of our products",
            "rule": "event_count",
            "event_type": "review.posted",
            "levels": [
                {"name": "Bronze", "threshold": 1, "bonus_points": 5},
                {"name": "Silver", "threshold": 5, "bonus_points": 25},
                {"name": "Gold", "threshold": 20, "bonus_points": 100},
            ],
        },
        {
            "name": "Regular",
            "description": "Check in every day",
            "rule": "streak",
            "levels": [
                {"name": "7-day streak", "threshold": 7, "bonus_points": 50},
                {"name": "30-day streak", "threshold": 30, "bonus_points": 300},
            ],
        },
        {
            "name": "Planet saver",
            "description": "CO2 saved by returning packaging",
            "rule": "property_sum",
            "event_type": "recycling.dropped_off",
            "property": "co2_kg",
            "levels": [
                {"name": "Seedling", "threshold": 5, "bonus_points": 10},
                {"name": "Tree", "threshold": 25, "bonus_points": 50},
            ],
        },
        {
            "name": "Big spender",
            "rule": "spend",
            "revoke_on_refund": True,
            "levels": [{"name": "1,000 spent", "threshold": 1000, "bonus_points": 100}],
        },
        {
            "name": f"Review challenge {month_start:%B %Y}",
            "description": "Post 3 reviews this month",
            "rule": "event_count",
            "event_type": "review.posted",
            "starts_at": month_start,
            "ends_at": next_month,
            "levels": [{"name": "Done", "threshold": 3, "bonus_points": 30}],
        },
    ]
    for badge in badges:
        community_service.create_badge(session, actor="demo", **badge)

    for external_id, days, reviews, drop_offs, display_name in DEMO_COMMUNITY:
        member = members_by_external_id.get(external_id)
        if member is None:
            continue
        for back in range(days - 1, -1, -1):
            community_service.check_in(
                session,
                client_id=DEMO_EVENT_CLIENT,
                member_id=member.id,
                event_id=f"DEMO-CHK-{external_id}-{back}",
                occurred_at=now - dt.timedelta(days=back, minutes=5),
                actor="demo",
                backfill=True,
            )
        for number in range(reviews):
            moment = max(month_start, now - dt.timedelta(days=number + 1))
            community_service.record_event(
                session,
                client_id=DEMO_EVENT_CLIENT,
                event_id=f"DEMO-REV-{external_id}-{number}",
                member_id=member.id,
                type="review.posted",
                occurred_at=min(moment, now),
                properties={"stars": 3 + number % 3},
                actor="demo",
                backfill=True,
            )
        for number, kg in enumerate(drop_offs):
            community_service.record_event(
                session,
                client_id=DEMO_EVENT_CLIENT,
                event_id=f"DEMO-RCY-{external_id}-{number}",
                member_id=member.id,
                type="recycling.dropped_off",
                occurred_at=now - dt.timedelta(days=2 * number + 1),
                properties={"co2_kg": kg, "store": "Main Street"},
                actor="demo",
                backfill=True,
            )
        if display_name:
            community_service.set_leaderboard_profile(
                session, member_id=member.id, opted_in=True, display_name=display_name
            )
