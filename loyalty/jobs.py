"""The due work of ``loyalty jobs run``: batched, idempotent, resumable, shareable between
several runners (each batch is its own short transaction that skips locked rows)."""

from __future__ import annotations

import io
import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import click
from flask import current_app
from sqlalchemy.orm import Session

from loyalty import idempotency, wiring
from loyalty.db import get_database
from loyalty.ledger import service as ledger_service

logger = logging.getLogger(__name__)


@dataclass
class Report:
    wallets_settled: int = 0
    keys_purged: int = 0
    # Labelled counts of the other areas' due work ("tier upgrades": 3, ...).
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        text = (
            f"Settled {self.wallets_settled} wallet(s) with due work; "
            f"purged {self.keys_purged} expired idempotency key(s)."
        )
        done = [f"{label}: {count}" for label, count in self.counts.items() if count]
        return text + (" " + "; ".join(done) + "." if done else "")


def run_due(
    session: Session, *, batch_size: int = 50, progress: bool = False, workers: int = 1
) -> Report:
    """Do everything due now: settle due wallets (activations, expiries, hold timeouts), tier
    reviews and re-evaluations, birthday gifts and claim expiry, webhook deliveries, and purge
    idempotency keys past their retention.

    With ``workers`` above 1 the wallets are settled by that many threads at once, each with
    a session (a connection) of its own taking the next due batch no other holds (see
    `settle_due_batch`): one thread's Python runs while the others wait on PostgreSQL, which
    works for them on the other cores. The rest of the work follows in ``session``, the
    analytics' daily pass beside it in a thread of its own (`wiring.BESIDE`)."""
    report = Report()
    # An inactivity switch-on interrupted half-way is finished before the wallets are read.
    report.counts["wallets marked due"] = ledger_service.sweep_due_wallets(session)
    total = ledger_service.due_wallet_count(session)
    # A pass settles what was due when it began (and what falls due meanwhile, up to one more
    # batch per worker): a wallet that stayed due once settled would otherwise hold the job
    # forever.
    budget = total + batch_size * workers
    with click.progressbar(
        length=total, label="Settling wallets", file=None if progress else io.StringIO()
    ) as bar:
        report.wallets_settled = settle_due_wallets(
            session, batch_size=batch_size, workers=workers, budget=budget, done=bar.update
        )
    for label, count in _area_due_work(session, batch_size, workers).items():
        report.counts[label] = report.counts.get(label, 0) + count
    report.keys_purged = idempotency.purge_expired_keys(session)
    return report


def _area_due_work(session: Session, batch_size: int, workers: int) -> dict[str, int]:
    """The areas' due work (`wiring.DUE_WORK`): in order in ``session``, or with ``workers``
    above 1 on PostgreSQL, `wiring.BESIDE` in a thread with a session of its own while the
    rest runs in ``session``, then `wiring.AFTER_BESIDE` once more."""
    if workers == 1 or session.get_bind().dialect.name != "postgresql":
        # SQLite's writers take turns: a pass beside the rest would only wait for it.
        return wiring.run_area_due_work(session, batch_size=batch_size)
    beside = [work for work in wiring.DUE_WORK if work in wiring.BESIDE]
    rest = [work for work in wiring.DUE_WORK if work not in wiring.BESIDE]
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def aside() -> dict[str, int]:
        with app.app_context():
            own = get_database(app).sessionmaker()
            try:
                return wiring.run_area_due_work(own, batch_size=batch_size, works=beside)
            finally:
                own.close()

    with ThreadPoolExecutor(1, thread_name_prefix="loyalty-jobs") as pool:
        started = pool.submit(aside)
        try:
            counts = [wiring.run_area_due_work(session, batch_size=batch_size, works=rest)]
        except BaseException as error:
            # Raised once the pass beside has stopped; its own error, if any, goes with it.
            beside_error = started.exception()
            if beside_error is not None:
                error.add_note(f"The due work beside it failed too: {beside_error!r}")
                logger.error("The due work beside the rest failed", exc_info=beside_error)
            raise
        counts.append(started.result())
    counts.append(
        wiring.run_area_due_work(session, batch_size=batch_size, works=[wiring.AFTER_BESIDE])
    )
    return dict(sum((Counter(part) for part in counts), Counter()))


def settle_due_wallets(
    session: Session,
    *,
    batch_size: int = 50,
    workers: int = 1,
    budget: int | None = None,
    done: Callable[[int], None] = lambda _count: None,
) -> int:
    """Settle due wallets in batches (`settle_due_batch`) until none is due or ``budget``
    wallets are settled, in ``session`` or, with ``workers`` above 1, in that many threads
    with sessions of their own (``session`` is closed first: its connection goes back to the
    pool). ``done`` is told each batch's count. Returns how many wallets were settled."""
    budget = budget if budget is not None else 2**62
    if workers > 1:
        session.close()
        return _settle_in_threads(workers, batch_size, budget, done)
    return _settle(session, batch_size, budget, done)


def _settle(
    session: Session,
    batch_size: int,
    budget: int,
    done: Callable[[int], None],
    shared: _Budget | None = None,
) -> int:
    """Settle due batches in ``session`` until none is due or ``budget`` wallets are settled
    (by all workers, with ``shared``); returns how many this loop settled."""
    shared = shared or _Budget(budget)
    settled = 0
    while shared.left():
        count = ledger_service.settle_due_batch(session, batch_size=batch_size)
        if not count:
            break
        settled += count
        shared.spend(count, done)
    return settled


class _Budget:
    """The wallets the workers of a pass may still settle, shared between their threads."""

    def __init__(self, wallets: int) -> None:
        self.wallets = wallets
        self._lock = threading.Lock()

    def left(self) -> bool:
        with self._lock:
            return self.wallets > 0

    def spend(self, count: int, done: Callable[[int], None]) -> None:
        with self._lock:
            self.wallets -= count
            done(count)


def _settle_in_threads(
    workers: int, batch_size: int, budget: int, done: Callable[[int], None]
) -> int:
    """`_settle` in ``workers`` threads, each in the app's context with its own session;
    the wallets they settled. An error in one is raised once all have stopped."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    shared = _Budget(budget)

    def work() -> int:
        with app.app_context():
            session = get_database(app).sessionmaker()
            try:
                return _settle(session, batch_size, budget, done, shared)
            finally:
                session.close()

    with ThreadPoolExecutor(workers, thread_name_prefix="loyalty-jobs") as pool:
        futures = [pool.submit(work) for _ in range(workers)]
        return sum(future.result() for future in futures)
