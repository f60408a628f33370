"""The ``loyalty`` command: Flask's commands plus ours (db, clients, demo, ...)."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, ScriptInfo, with_appcontext
from flask.cli import run_command as flask_run_command

from loyalty import create_app, migrator
from loyalty.auth import service as auth_service
from loyalty.auth.rules import DEFAULT_CHANNEL, SCOPES
from loyalty.config import ConfigError, check_secret
from loyalty.db import get_session
from loyalty.errors import LoyaltyError


def _create_cli_app() -> Flask:
    try:
        return create_app(require_secret=False)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


class LoyaltyGroup(FlaskGroup):
    """FlaskGroup that reports configuration errors in one line rather than a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            ctx.ensure_object(ScriptInfo).load_app()
        except click.ClickException as error:
            click.secho(f"Error: {error.format_message()}\n", err=True, fg="red")
            return sorted(self.commands)
        return super().list_commands(ctx)


@click.group(cls=LoyaltyGroup, create_app=_create_cli_app)
def main() -> None:
    """Loyalty: members, points, tiers and rewards for storefronts."""


@main.command("run", params=list(flask_run_command.params), help=flask_run_command.help)
@click.pass_context
def run_command(ctx: click.Context, **kwargs: Any) -> None:
    app = ctx.ensure_object(ScriptInfo).load_app()
    try:
        check_secret(app)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    ctx.invoke(flask_run_command, **kwargs)


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    help="Processes (default: one per CPU core).",
)
@click.option(
    "--threads",
    default=4,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Requests each process serves at once (keep LOYALTY_DATABASE_POOL_SIZE at least this).",
)
@click.pass_context
def serve_command(
    ctx: click.Context, host: str, port: int, workers: int | None, threads: int
) -> None:
    """Serve the API for production with granian (WSGI): WORKERS processes of THREADS threads.

    The app is created (and its configuration checked) before granian starts, so that a
    missing secret or a bad database URL stops it here with a clear message."""
    app = ctx.ensure_object(ScriptInfo).load_app()
    try:
        check_secret(app)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    if app.config["DATABASE_POOL_SIZE"] < threads:
        raise click.ClickException(
            f"--threads {threads} needs LOYALTY_DATABASE_POOL_SIZE of at least {threads}."
        )
    argv = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers or os.cpu_count() or 1),
        "--blocking-threads",
        str(threads),
        # No more requests inside a process than it has threads: the rest wait their turn in
        # the listen queue rather than in a process that cannot start them.
        "--backpressure",
        str(threads),
        "--no-ws",
        "loyalty.wsgi:app",
    ]
    click.echo(f"Serving on http://{host}:{port} with granian ({argv[11]} x {threads})", err=True)
    sys.stdout.flush()
    os.execv(sys.executable, argv)


def _fail(error: LoyaltyError) -> click.ClickException:
    return click.ClickException(error.detail)


# --- loyalty db ----------------------------------------------------------------------------


@main.group("db")
def db_group() -> None:
    """Database migrations (Alembic)."""


def _alembic() -> Any:
    try:
        return migrator.alembic_config(current_app.config["DATABASE_URL"])
    except RuntimeError as error:  # a broken installation without its migrations
        raise click.ClickException(str(error)) from None


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: the latest)."""
    migrator.upgrade(_alembic(), revision)
    click.echo(f"Database at {revision}.")


@db_group.command("downgrade")
@click.argument("revision")
@with_appcontext
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION (e.g. -1, or base)."""
    migrator.downgrade(_alembic(), revision)
    click.echo(f"Database at {revision}.")


@db_group.command("revision")
@click.option("-m", "--message", required=True, help="What the migration does.")
@click.option("--autogenerate/--empty", default=True, help="Compare models with the database.")
@with_appcontext
def db_revision(message: str, autogenerate: bool) -> None:
    """Write a new migration with the next sequential id, in the source checkout."""
    if not migrator.in_checkout():
        raise click.ClickException(
            f"{migrator.migrations_dir()} is an installed package's folder: write new migrations "
            "in a source checkout installed with `pip install -e .`."
        )
    migrator.revision(_alembic(), message, autogenerate=autogenerate)


@db_group.command("check")
@with_appcontext
def db_check() -> None:
    """Fail when the models and the migrated database differ."""
    migrator.check(_alembic())
    click.echo("No differences between the models and the database.")


@db_group.command("current")
@with_appcontext
def db_current() -> None:
    """Show the database's revision."""
    from alembic import command

    command.current(_alembic(), verbose=False)


# --- loyalty clients -----------------------------------------------------------------------


@main.group("clients")
def clients_group() -> None:
    """API clients (storefronts, back offices) and their scopes."""


@clients_group.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(SCOPES),
    help="A scope to grant; repeat for several.",
)
@click.option("--all-scopes", is_flag=True, help="Grant every scope.")
@click.option(
    "--channel",
    "channel_id",
    default=DEFAULT_CHANNEL,
    show_default=True,
    help="The channel the client reports for (see `loyalty channels list`).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, for scripts.")
@with_appcontext
def clients_create(
    name: str, scopes: tuple[str, ...], all_scopes: bool, channel_id: str, as_json: bool
) -> None:
    """Create an API client; its secret is printed once and cannot be shown again."""
    if all_scopes:
        scopes = SCOPES
    if not scopes:
        raise click.UsageError("Give at least one --scope, or --all-scopes.")
    try:
        new = auth_service.create_client(
            get_session(), name=name, scopes=scopes, channel_id=channel_id
        )
    except LoyaltyError as error:
        raise _fail(error) from None
    if as_json:
        click.echo(
            json.dumps(
                {
                    "client_id": new.client.id,
                    "client_secret": new.secret,
                    "scopes": new.client.scopes,
                    "channel_id": new.client.channel_id,
                }
            )
        )
        return
    click.echo(f"client_id:     {new.client.id}")
    click.echo(f"client_secret: {new.secret}")
    click.echo(f"scopes:        {' '.join(new.client.scopes)}")
    click.echo(f"channel:       {new.client.channel_id}")
    click.echo("Keep the secret now: it is stored hashed and cannot be shown again.")


@clients_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@with_appcontext
def clients_list(as_json: bool) -> None:
    """List API clients, revoked ones included."""
    clients = auth_service.list_clients(get_session())
    rows = [
        {
            "client_id": c.id,
            "name": c.name,
            "channel_id": c.channel_id,
            "scopes": c.scopes,
            "created_at": c.created_at.isoformat(),
            "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
        }
        for c in clients
    ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("No API clients yet: create one with `loyalty clients create NAME --scope ...`.")
    for client in clients:
        state = f"revoked {client.revoked_at.isoformat()}" if client.revoked_at else "active"
        click.echo(
            f"{client.id}  {client.name}  [{state}]  {client.channel_id}  {' '.join(client.scopes)}"
        )


@clients_group.command("revoke")
@click.argument("client_id")
@with_appcontext
def clients_revoke(client_id: str) -> None:
    """Revoke a client: its secret and every token issued to it stop working."""
    try:
        client = auth_service.revoke_client(get_session(), client_id=client_id)
    except LoyaltyError as error:
        raise _fail(error) from None
    assert client.revoked_at is not None
    click.echo(f"Revoked {client.id} ({client.name}) at {client.revoked_at.isoformat()}.")


# --- loyalty channels ---------------------------------------------------------------------


@main.group("channels")
def channels_group() -> None:
    """Channels: the storefronts, points of sale and apps orders come from. Order, refund and
    event ids are unique per channel; every API client belongs to one."""


@channels_group.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, for scripts.")
@with_appcontext
def channels_create(name: str, as_json: bool) -> None:
    """Add a channel; give its id to `loyalty clients create --channel`."""
    try:
        channel = auth_service.create_channel(get_session(), name=name)
    except LoyaltyError as error:
        raise _fail(error) from None
    if as_json:
        click.echo(json.dumps({"channel_id": channel.id, "name": channel.name}))
        return
    click.echo(f"Created channel {channel.id} ({channel.name}).")


@channels_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@with_appcontext
def channels_list(as_json: bool) -> None:
    """List the channels, the default one first."""
    channels = auth_service.list_channels(get_session())
    if as_json:
        click.echo(
            json.dumps(
                [
                    {"channel_id": c.id, "name": c.name, "created_at": c.created_at.isoformat()}
                    for c in channels
                ]
            )
        )
        return
    for channel in channels:
        click.echo(f"{channel.id}  {channel.name}")


# --- loyalty jobs, loyalty ledger ---------------------------------------------------------


@main.group("jobs")
def jobs_group() -> None:
    """Background work: activate pending points, expire points, release timed-out holds,
    deliver webhooks."""


@jobs_group.command("run")
@click.option("--once", is_flag=True, help="Do what is due now, then exit.")
@click.option("--batch-size", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--interval", default=30.0, show_default=True, help="Seconds between passes.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 32),
    help="Threads settling wallets at once, each on a connection of its own (2 keeps two "
    "cores busy: one runs Python while PostgreSQL works for the other); above 1, the "
    "analytics' daily pass runs beside the other areas' due work (PostgreSQL).",
)
@click.option(
    "--progress/--no-progress", default=None, help="Show a progress bar (default: on a terminal)."
)
@with_appcontext
def jobs_run(
    once: bool, batch_size: int, interval: float, workers: int, progress: bool | None
) -> None:
    """Run the due work in short batches; safe to run as several processes at once."""
    from loyalty import jobs

    show = sys.stdout.isatty() if progress is None else progress
    while True:
        report = jobs.run_due(get_session(), batch_size=batch_size, progress=show, workers=workers)
        click.echo(report.summary())
        if once:
            return
        time.sleep(interval)


@main.command("worker")
@click.option("--batch-size", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--jobs-interval",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between passes of all the due work (`loyalty jobs run`).",
)
@click.option(
    "--poll-interval",
    default=None,
    type=click.FloatRange(min=0.05),
    help="Seconds between looks for new events and due retries [default: 1 on SQLite; 5 on "
    "PostgreSQL, where a committed event wakes the worker at once].",
)
@with_appcontext
def worker_command(batch_size: int, jobs_interval: float, poll_interval: float | None) -> None:
    """Deliver webhooks as events are committed and do the due work every so often; runs
    until SIGTERM or SIGINT (Ctrl-C). Safe to run as several processes at once."""
    import signal
    import threading

    from loyalty import worker

    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        click.echo(f"{signal.Signals(signum).name}: stopping after the work in progress.")
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    click.echo("Worker started: delivering webhooks and doing the due work (Ctrl-C stops).")
    worker.run(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        stop=stop,
        batch_size=batch_size,
        jobs_interval=jobs_interval,
        poll_interval=poll_interval,
    )
    click.echo("Worker stopped.")


@main.group("ledger")
def ledger_group() -> None:
    """The points ledger."""


@ledger_group.command("verify")
@with_appcontext
def ledger_verify() -> None:
    """Check the ledger's invariants over the whole database; exit 1 if any is broken."""
    from loyalty.ledger.invariants import verify

    violations = verify(get_session())
    for violation in violations:
        click.echo(str(violation), err=True)
    if violations:
        raise click.exceptions.Exit(1)
    click.echo("Ledger verified: every invariant holds.")


@ledger_group.command("recount")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 10_000))
@with_appcontext
def ledger_recount(batch_size: int) -> None:
    """Count each wallet's spend and orders again from its orders (invariant 8)."""
    from loyalty.ledger import service

    corrected = service.recount_orders(get_session(), batch_size=batch_size)
    click.echo(f"Wallets recounted: {corrected} corrected.")


# --- loyalty demo --------------------------------------------------------------------------


@main.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--no-serve", is_flag=True, help="Prepare the database and print, then exit.")
@click.option(
    "--reset",
    is_flag=True,
    help="Start over: delete the SQLite demo database, then seed it again (new credentials).",
)
def demo_command(host: str, port: int, no_serve: bool, reset: bool) -> None:
    """Create (or reuse) the SQLite demo database with a demo programme, then serve it."""
    from loyalty import demo

    demo.run(host=host, port=port, serve=not no_serve, reset=reset)


# --- loyalty import ---------------------------------------------------------------------------


@main.group("import")
def import_group() -> None:
    """A storefront's history, older than the API accepts (see README "Importing history")."""


def _import_options(func: Any) -> Any:
    func = click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))(
        func
    )
    func = click.option(
        "--channel",
        "channel_id",
        default=DEFAULT_CHANNEL,
        show_default=True,
        help="The channel whose order and refund ids the file uses.",
    )(func)
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Show a progress bar (default: on a terminal).",
    )(func)


@import_group.command("orders")
@_import_options
@with_appcontext
def import_orders(path: Path, channel_id: str, progress: bool | None) -> None:
    """Record the orders of a CSV or JSON Lines file (order_id, member_id or external_id,
    total, currency, placed_at, items): safe to run again, rows already recorded are skipped."""
    _import("orders", path, channel_id, progress)


@import_group.command("refunds")
@_import_options
@with_appcontext
def import_refunds(path: Path, channel_id: str, progress: bool | None) -> None:
    """Record the refunds of a CSV or JSON Lines file (order_id, refund_id, amount or items):
    safe to run again."""
    _import("refunds", path, channel_id, progress)


def _import(what: str, path: Path, channel_id: str, progress: bool | None) -> None:
    from loyalty import imports

    run = imports.import_orders if what == "orders" else imports.import_refunds
    session = get_session()
    try:
        report = run(
            session,
            path,
            channel_id=channel_id,
            progress=sys.stdout.isatty() if progress is None else progress,
        )
    except (LoyaltyError, imports.ImportFileError) as error:
        session.rollback()  # end the reads' transaction before reporting
        if isinstance(error, LoyaltyError):
            raise _fail(error) from None
        raise click.ClickException(str(error)) from None
    for failure in report.failures:
        click.echo(failure, err=True)
    click.echo(report.summary(what))
    if report.failed:
        raise click.exceptions.Exit(1)


@main.group("stripe")
def stripe_group() -> None:
    """Stripe billing (see README "Stripe billing")."""


def _moment(value: str) -> dt.datetime:
    """A date (midnight UTC) or an RFC 3339 timestamp."""
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("give a date (2026-12-01) or a timestamp") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@stripe_group.command("reconcile")
@click.option(
    "--since", required=True, help="From this date or time (UTC when no offset is given)."
)
@click.option("--until", default=None, help="Up to this date or time (default: now).")
@click.option(
    "--progress/--no-progress", default=None, help="Show a progress bar (default: on a terminal)."
)
@with_appcontext
def stripe_reconcile(since: str, until: str | None, progress: bool | None) -> None:
    """List Stripe's events of the period, apply those the webhook missed, and print what was
    fixed; events already recorded are left alone, so it is safe to run at any time."""
    import io

    from loyalty.billing import service as billing

    start, end = _moment(since), _moment(until) if until else None
    session = get_session()
    try:
        events = billing.stripe_events(start, end)
    except LoyaltyError as error:
        raise _fail(error) from None
    show = sys.stdout.isatty() if progress is None else progress
    with click.progressbar(
        length=len(events), label="Reconciling", file=None if show else io.StringIO()
    ) as bar:
        report = billing.reconcile(session, events, progress=bar.update)
    for event_id, type_, status in report.fixed:
        click.echo(f"fixed {event_id} {type_}: {status}")
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(report.statuses.items()))
    click.echo(
        f"{report.seen} Stripe events since {start.isoformat()}: {report.already} already "
        f"recorded, {len(report.fixed)} applied now" + (f" ({statuses})" if statuses else "")
    )


if __name__ == "__main__":  # python3 -m loyalty.cli, from a checkout
    main()
