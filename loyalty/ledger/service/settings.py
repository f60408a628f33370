"""The programme's core settings (earn rate, return window, expiry and refund policies, hold
timeout) and the sweep that marks wallets due when the inactivity policy is switched on.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.audit import service as audit_service
from loyalty.db import after_commit, retrying, settings_row, unit_of_work
from loyalty.errors import InvalidFieldError
from loyalty.ledger.models import ProgramSettings, Wallet
from loyalty.ledger.service._core import Settings, _note_due, current_settings
from loyalty.members import rules as members_rules

SETTINGS_FIELDS = (
    "earn_rate",
    "rounding",
    "pending_days",
    "expiry_policy",
    "expiry_months",
    "expiry_period",
    "refund_policy",
    "hold_timeout_seconds",
    "timezone",
    "max_order_age_days",
)


# Wallets marked due per transaction while the inactivity policy is switched on.
SWEEP_BATCH = 500


# The shortest month, for checking that inactivity leaves points spendable after the return
# window.
INACTIVITY_DAYS_PER_MONTH = 28


def get_settings(session: Session) -> Settings:
    """The programme's core settings (the defaults until a manager changes them), as this
    process read them at the configuration's current version."""
    return current_settings(session)


@retrying
def update_settings(session: Session, *, changes: dict[str, Any], actor: str) -> ProgramSettings:
    """Change core settings. New values apply to points earned from now on: lots keep the
    expiry date they were given, except under the inactivity policy, which the job applies.

    Switching the inactivity policy on (or changing its months or time zone) marks every
    wallet due so the job looks at it: in short batches of their own once this change (and
    the request around it) has committed (see `sweep_due_wallets`; the job finishes a sweep
    that could not), never in one transaction over every wallet. Raises `InvalidFieldError`
    for an unknown time zone or an inactivity period not longer than the return window.
    """
    if "timezone" in changes and not members_rules.is_time_zone(changes["timezone"]):
        raise InvalidFieldError("timezone", "Not a known IANA time zone (e.g. Europe/Berlin).")
    with unit_of_work(session):
        settings = settings_row(session, ProgramSettings, lock=True)
        before = {field: getattr(settings, field) for field in SETTINGS_FIELDS}
        audit_service.apply_changes(settings, changes, SETTINGS_FIELDS)
        if (
            settings.expiry_policy == "inactivity"
            and settings.pending_days >= INACTIVITY_DAYS_PER_MONTH * settings.expiry_months
        ):
            raise InvalidFieldError(
                "expiry_months",
                "Under the inactivity policy, points must stay spendable for a while after "
                f"they activate: expiry_months ({settings.expiry_months}) must be longer than "
                f"the return window of {settings.pending_days} days.",
            )
        settings.updated_at = clock.now()
        settings.updated_by = actor
        after = {field: getattr(settings, field) for field in SETTINGS_FIELDS}
        if settings.expiry_policy == "inactivity" and (
            before["expiry_policy"] != "inactivity"
            or before["expiry_months"] != after["expiry_months"]
            or before["timezone"] != after["timezone"]
        ):
            settings.due_sweep_after = ""
            # After this commits (and after the whole request, with an Idempotency-Key), in
            # short batches of its own; if a member's wallet is busy the job finishes it.
            after_commit(session, lambda later: sweep_due_wallets(later))
        audit_service.record(
            session,
            actor=actor,
            action="updated",
            entity_type="program_settings",
            entity_id="core",
            before=before,
            after=after,
        )
    return settings


def sweep_due_wallets(session: Session, *, batch_size: int = SWEEP_BATCH) -> int:
    """Finish a pending sweep: mark wallets with points due now (the job then applies the
    inactivity policy to them), ``batch_size`` wallets per short transaction in member-id
    order, resuming where an interrupted sweep stopped. Returns the wallets marked."""
    marked = 0
    while True:
        done, count = _sweep_batch(session, batch_size)
        marked += count
        if done:
            return marked


@retrying
def _sweep_batch(session: Session, batch_size: int) -> tuple[bool, int]:
    with unit_of_work(session):
        settings = session.get(ProgramSettings, 1, with_for_update=True)
        if settings is None or settings.due_sweep_after is None:
            return True, 0
        if settings.expiry_policy != "inactivity":
            settings.due_sweep_after = None
            return True, 0
        after = settings.due_sweep_after
        # Locked in member-id order, the order every multi-wallet operation locks in.
        wallets = list(
            session.scalars(
                select(Wallet)
                .where(Wallet.member_id > after)
                .order_by(Wallet.member_id)
                .limit(batch_size)
                .with_for_update()
            )
        )
        now = clock.now()
        for wallet in wallets:  # the job settles each once and works out what is due next
            _note_due(wallet, now)
        settings.due_sweep_after = wallets[-1].member_id if len(wallets) == batch_size else None
    return settings.due_sweep_after is None, len(wallets)
