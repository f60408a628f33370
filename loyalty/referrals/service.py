"""Referrals: codes, attribution, qualification, rewards, abuse limits and clawback.

(Scaffold: the hooks the ledger calls; the referrals work fills them in.)
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session


def on_order_activated(
    session: Session, *, member_id: str, order_pk: str, now: dt.datetime, actor: str | None
) -> None:
    """Called by the ledger inside its unit of work, with the member's wallet locked, when an
    order's points activate (its return window is over)."""


def on_order_refunded(
    session: Session,
    *,
    member_id: str,
    order_pk: str,
    refund_pk: str,
    now: dt.datetime,
    actor: str | None,
) -> None:
    """Called by the ledger inside the refund's unit of work, with the member's wallet
    locked, after a refund of the order is written."""


def run_due(session: Session, *, batch_size: int = 200) -> dict[str, int]:
    """Due referral work for ``loyalty jobs run``; returns labelled counts."""
    return {}
