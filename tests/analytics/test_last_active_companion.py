"""The accrual's lock reads the member's last activity up to its moment and the first after
it, each source's row nearest the moment from its (member, time) index (b721396). It must
say what the aggregate over every activity says (`_sql.moments`), at any moment: orders
refunded in full are no activity, orders of total 0 are, redemptions and engagement events
count, ties and moments equal to an activity's. So must the read after the lock, when the
wallet changed while the order waited (`stages._last_active`), which reads the same rows."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.analytics.service import stages
from loyalty.analytics.service._sql import moments
from loyalty.clock import FrozenClock
from loyalty.community import service as community
from loyalty.ledger import ports as ledger_ports
from loyalty.ledger import service as ledger
from loyalty.ledger.models import Wallet
from loyalty.members import service as members
from tests.analytics.conftest import DAY, NOW


def _around(session: Session, member_id: str, moment: dt.datetime) -> tuple[object, object]:
    new = stages._with_last_active(
        select(Wallet.member_id).where(Wallet.member_id == member_id), Wallet.member_id
    )
    _, _, last, first_after = session.execute(new, {ledger_ports.LOCK_NOW: moment}).one()
    return last, first_after


def _aggregate(session: Session, member_id: str, moment: dt.datetime) -> tuple[object, object]:
    acts = moments()
    return tuple(  # type: ignore[return-value]
        session.execute(
            select(
                func.max(acts.c.at).filter(acts.c.at <= moment),
                func.min(acts.c.at).filter(acts.c.at > moment),
            ).where(acts.c.member_id == member_id)
        ).one()
    )


def test_the_nearest_activity_on_either_side_is_the_aggregates(
    session: Session, now: FrozenClock
) -> None:
    ledger.update_settings(session, changes={"pending_days": 0}, actor="t")
    member = members.enroll_member(session, external_id="around")[0].id
    quiet = members.enroll_member(session, external_id="quiet")[0].id
    start = NOW - 20 * DAY

    def order(order_id: str, placed: dt.datetime, total: int) -> None:
        ledger.accrue_order(
            session,
            client_id="cli_test",
            order_id=order_id,
            member_id=member,
            total=total,
            currency="USD",
            placed_at=placed,
        )

    order("early", start, 5000)
    order("refunded", start + 2 * DAY, 3000)
    ledger.refund_order(
        session, client_id="cli_test", order_id="refunded", refund_id="r-1", amount=3000
    )
    order("free", start + 4 * DAY, 0)
    order("tie-a", start + 6 * DAY, 1000)
    order("tie-b", start + 6 * DAY, 2000)
    now.set(start + 8 * DAY)
    ledger.redeem(session, member_id=member, points=10, reason="coffee")
    now.set(start + 10 * DAY)
    community.check_in(session, member_id=member, occurred_at=start + 10 * DAY)
    now.set(NOW)
    moments_to_ask = [
        start - DAY,
        start,
        start + DAY,
        start + 2 * DAY,
        start + 3 * DAY,
        start + 4 * DAY,
        start + 6 * DAY,
        start + 6 * DAY + dt.timedelta(microseconds=1),
        start + 8 * DAY,
        start + 9 * DAY,
        start + 10 * DAY,
        NOW,
    ]
    for moment in moments_to_ask:
        assert _around(session, member, moment) == _aggregate(session, member, moment), moment
        assert _around(session, quiet, moment) == (None, None)
        # Read again after the lock (the wallet changed while the order waited): the same.
        last = stages._last_active(session, member, moment)
        assert last == _aggregate(session, member, moment)[0], moment
        assert stages._last_active(session, quiet, moment) is None
    # The refunded order is no activity: asked just after it, the last is the first order.
    assert _around(session, member, start + 3 * DAY)[0] == start


def test_the_read_after_the_lock_reads_the_nearest_rows_not_the_history() -> None:
    """On PostgreSQL it stops at each source's nearest row (no aggregate over the member's
    history, which a hot member's every order read under its lock: 0.27 ms at 3,000 orders)."""
    sql = str(stages._last_active_query("postgresql"))
    assert sql.count("LIMIT") == 3 and "max(" not in sql, sql
