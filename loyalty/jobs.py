"""The due work of ``loyalty jobs run``: batched, idempotent, resumable, shareable between
several runners (each batch is its own short transaction that skips locked rows)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import click
from sqlalchemy.orm import Session

from loyalty import idempotency, wiring
from loyalty.ledger import service as ledger_service


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


def run_due(session: Session, *, batch_size: int = 50, progress: bool = False) -> Report:
    """Do everything due now: settle due wallets (activations, expiries, hold timeouts), tier
    reviews and re-evaluations, birthday gifts and claim expiry, webhook deliveries, and purge
    idempotency keys past their retention."""
    report = Report()
    # An inactivity switch-on interrupted half-way is finished before the wallets are read.
    report.counts["wallets marked due"] = ledger_service.sweep_due_wallets(session)
    total = ledger_service.due_wallet_count(session)
    # A pass settles what was due when it began (and what falls due meanwhile, up to one more
    # batch): a wallet that stayed due once settled would otherwise hold the job forever.
    budget = total + batch_size
    with click.progressbar(
        length=total, label="Settling wallets", file=None if progress else io.StringIO()
    ) as bar:
        while report.wallets_settled < budget:
            settled = ledger_service.settle_due_batch(session, batch_size=batch_size)
            if not settled:
                break
            report.wallets_settled += settled
            bar.update(settled)
    for label, count in wiring.run_area_due_work(session, batch_size=batch_size).items():
        report.counts[label] = report.counts.get(label, 0) + count
    report.keys_purged = idempotency.purge_expired_keys(session)
    return report
