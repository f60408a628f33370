"""``loyalty worker``: woken by NOTIFY on PostgreSQL, polling on SQLite, stopping cleanly;
``loyalty jobs run --once`` delivers too."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from pytest_httpserver import HTTPServer
from sqlalchemy.orm import Session

from loyalty import worker
from loyalty.cli import main
from loyalty.clock import FrozenClock
from loyalty.db import get_database
from tests.events.conftest import make_endpoint, received, record, url

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def running(app: Flask) -> Iterator[Callable[..., threading.Thread]]:
    """Start `worker.run` in a thread; stopped (and checked to stop) at the end."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(target_app: Flask, **options: float) -> threading.Thread:
        thread = threading.Thread(
            target=worker.run, args=(target_app,), kwargs={"stop": stop, **options}, daemon=True
        )
        thread.start()
        threads.append(thread)
        return thread

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive(), "the worker did not stop"


@pytest.mark.concurrency
def test_a_committed_event_wakes_the_worker_on_postgresql(
    app: Flask,
    new_session: Callable[[], Session],
    receiver: HTTPServer,
    clock: FrozenClock,
    running: Callable[..., threading.Thread],
) -> None:
    session = new_session()
    make_endpoint(session, url(receiver))
    # Polling alone would take 60 s: only the notification can bring the event in time.
    running(app, poll_interval=60.0, jobs_interval=3600.0)
    time.sleep(0.3)  # the worker's first pass (the due work) is done and it listens
    started = time.monotonic()
    event_id = record(session)
    assert wait_for(lambda: len(received(receiver)) == 1, timeout=3)
    assert time.monotonic() - started < 2
    assert received(receiver)[0].headers["webhook-id"] == event_id


def test_the_worker_polls_on_sqlite(
    sqlite_app: Flask, receiver: HTTPServer, running: Callable[..., threading.Thread]
) -> None:
    with sqlite_app.app_context():
        session = get_database(sqlite_app).sessionmaker()
        make_endpoint(session, url(receiver))
        running(sqlite_app, poll_interval=0.1, jobs_interval=3600.0)
        event_id = record(session)
        session.close()
    # Without polling the event would wait for the next due-work pass, an hour away; the
    # bound leaves room for the worker's first pass (the due work) on a loaded machine.
    assert wait_for(lambda: len(received(receiver)) == 1, timeout=15)
    assert received(receiver)[0].headers["webhook-id"] == event_id


def test_jobs_run_once_delivers_webhooks(
    app: Flask, session: Session, receiver: HTTPServer, clock: FrozenClock
) -> None:
    make_endpoint(session, url(receiver))
    record(session)
    result = app.test_cli_runner().invoke(main, ["jobs", "run", "--once"])
    assert result.exit_code == 0, result.output
    assert "webhook events fanned out: 1; webhook attempts: 1" in result.output
    assert len(received(receiver)) == 1


def test_loyalty_worker_stops_on_sigterm(sqlite_template: Path, tmp_path: Path) -> None:
    shutil.copy(sqlite_template, tmp_path / "worker.db")
    env = {
        **os.environ,
        "LOYALTY_DATABASE_URL": f"sqlite:///{tmp_path / 'worker.db'}",
        "LOYALTY_INSTANCE_PATH": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "loyalty.cli", "worker", "--poll-interval", "0.2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "Worker started" in process.stdout.readline()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "SIGTERM: stopping" in output and "Worker stopped." in output
