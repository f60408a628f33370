"""Community: engagement events, event rules, check-ins and streaks, badges, challenges and
leaderboards.

(Scaffold: the hooks the ledger calls; the community work fills them in.)
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session


def after_order(
    session: Session, *, member_id: str, order_pk: str, now: dt.datetime, actor: str | None
) -> None:
    """Called by the ledger inside the accrual's unit of work, with the member's wallet
    locked, after an order is recorded (badges for spend and orders are awarded here)."""


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
    """Due community work for ``loyalty jobs run``; returns labelled counts."""
    return {}
