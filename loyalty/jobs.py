"""The due work of ``loyalty jobs run``: batched, idempotent, resumable, shareable between
several runners (each batch is its own short transaction that skips locked wallets)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import click
from sqlalchemy.orm import Session

from loyalty import idempotency
from loyalty.ledger import service as ledger_service


@dataclass
class Report:
    wallets_settled: int = 0
    keys_purged: int = 0

    def summary(self) -> str:
        return (
            f"Settled {self.wallets_settled} wallet(s) with due work; "
            f"purged {self.keys_purged} expired idempotency key(s)."
        )


def run_due(session: Session, *, batch_size: int = 50, progress: bool = False) -> Report:
    """Do everything due now: settle due wallets (activations, expiries, hold timeouts) and
    purge idempotency keys past their retention."""
    report = Report()
    total = ledger_service.due_wallet_count(session)
    with click.progressbar(
        length=total, label="Settling wallets", file=None if progress else io.StringIO()
    ) as bar:
        while True:
            settled = ledger_service.settle_due_batch(session, batch_size=batch_size)
            if not settled:
                break
            report.wallets_settled += settled
            bar.update(settled)
    report.keys_purged = idempotency.purge_expired_keys(session)
    return report
