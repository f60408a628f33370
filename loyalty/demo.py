"""``loyalty demo``: a ready-to-try service on SQLite with a demo programme and an API client."""

from __future__ import annotations

import datetime as dt
import json
import os
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
from loyalty.db import get_session
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
        700,
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
)


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
