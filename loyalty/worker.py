"""``loyalty worker``: the long-running process that delivers webhooks as events are committed
and does the due work of ``loyalty jobs run`` every so often.

On PostgreSQL the worker LISTENs on the outbox's channel on a connection of its own: a
committed event wakes it at once (`loyalty.events.outbox.record` NOTIFYs at commit), and it
also looks for due retries every ``poll_interval`` seconds. On SQLite, which has no
notifications, it looks every ``poll_interval`` seconds. Several workers may run at once.
It stops cleanly when ``stop`` is set (``loyalty worker`` sets it on SIGTERM and SIGINT),
after the attempt in progress.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from flask import Flask
from sqlalchemy import make_url

from loyalty import jobs
from loyalty.db import get_database
from loyalty.events import delivery
from loyalty.events.outbox import CHANNEL

log = logging.getLogger(__name__)

# After a failed pass (the database restarting, say), wait this long before the next one.
ERROR_BACKOFF = 5.0
# The longest single wait, so that a stop request is seen quickly.
WAIT_SLICE = 0.5


class _Listener:
    """A PostgreSQL connection LISTENing on the outbox channel."""

    def __init__(self, url: str) -> None:
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.connection = psycopg.connect(conninfo, autocommit=True)
        self.connection.execute(f"LISTEN {CHANNEL}")

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notification; True if one came (all those
        already queued are taken)."""
        woken = False
        for _ in self.connection.notifies(timeout=timeout, stop_after=1):
            woken = True
        if woken:
            for _ in self.connection.notifies(timeout=0):
                pass
        return woken

    def close(self) -> None:
        self.connection.close()


def run(
    app: Flask,
    *,
    stop: threading.Event,
    batch_size: int = 50,
    jobs_interval: float = 30.0,
    poll_interval: float | None = None,
) -> None:
    """Deliver webhooks and do the due work until ``stop`` is set.

    A delivery pass runs when an event is committed (PostgreSQL) and at least every
    ``poll_interval`` seconds (default: 1 on SQLite, 5 on PostgreSQL, for due retries); all
    the due work (`loyalty.jobs.run_due`, deliveries included) runs every ``jobs_interval``
    seconds, starting at once."""
    if poll_interval is None:
        poll_interval = 5.0 if _is_postgresql(app) else 1.0
    with app.app_context():
        session = get_database(app).sessionmaker()
        listener: _Listener | None = None
        next_jobs = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    if listener is None:
                        listener = _open_listener(app)
                    if time.monotonic() >= next_jobs:
                        report = jobs.run_due(session, batch_size=batch_size)
                        log.info("%s", report.summary())
                        next_jobs = time.monotonic() + jobs_interval
                    else:
                        done = delivery.deliver_due(session, batch_size=batch_size)
                        if done.attempts:
                            log.info(
                                "webhooks: %d attempt(s), %d delivered",
                                done.attempts,
                                done.delivered,
                            )
                except Exception:  # noqa: BLE001 - a worker outlives one failed pass
                    log.exception("worker pass failed; trying again in %.0f s", ERROR_BACKOFF)
                    session.rollback()
                    if listener is not None:
                        listener.close()
                        listener = None
                    stop.wait(ERROR_BACKOFF)
                    continue
                _wait(listener, stop, min(poll_interval, max(0.0, next_jobs - time.monotonic())))
        finally:
            if listener is not None:
                listener.close()
            session.close()


def _is_postgresql(app: Flask) -> bool:
    return str(app.config["DATABASE_URL"]).startswith("postgresql")


def _open_listener(app: Flask) -> _Listener | None:
    return _Listener(app.config["DATABASE_URL"]) if _is_postgresql(app) else None


def _wait(listener: _Listener | None, stop: threading.Event, seconds: float) -> None:
    """Wait ``seconds``, or less when an event is committed or a stop is asked for."""
    deadline = time.monotonic() + seconds
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if listener is None:
            stop.wait(min(left, WAIT_SLICE))
        elif listener.wait(min(left, WAIT_SLICE)):
            return
