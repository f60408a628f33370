"""The member's spend and order count as one SQL expression (`order_measure`, which badges on
orders store in the statement that reads them) agree with `activity`, which adds each
currency's money in Python: currencies of 0, 2, 3 and 4 decimals, refunds in part and in
full, every shape of window."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.ledger import service
from tests.ledger.conftest import order
from tests.support import START

DAY = dt.timedelta(days=1)
WINDOWS = [
    (None, None),
    (START - 3 * DAY, None),
    (None, START - DAY),
    (START - 3 * DAY, START - DAY),
    (START + DAY, None),  # nothing placed since
]


@pytest.mark.parametrize(("since", "until"), WINDOWS)
def test_the_measure_in_sql_is_the_activity_in_python(
    session: Session,
    member: Callable[..., str],
    clock: FrozenClock,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> None:
    someone, other = member(), member()
    placed = [
        ("usd", 12345, "USD", 5),  # 123.45
        ("jpy", 9999, "JPY", 4),  # 9,999
        ("bhd", 1500, "BHD", 3),  # 1.500
        ("clf", 123456, "CLF", 2),  # 12.3456
        ("usd-part", 10001, "USD", 2),  # 100.01, 33.33 refunded
        ("usd-whole", 5000, "USD", 1),  # refunded in full: no longer counted
        ("eur", 99, "EUR", 0),  # 0.99
    ]
    for order_id, total, currency, days_ago in placed:
        order(
            session,
            someone,
            total,
            order_id=order_id,
            currency=currency,
            placed_at=START - days_ago * DAY,
        )
    order(session, other, 777777, order_id="other", currency="USD")  # someone else's
    service.refund_order(session, order_id="usd-part", refund_id="r1", amount=3333)
    service.refund_order(session, order_id="usd-whole", refund_id="r2", amount=5000)

    python = service.activity(session, someone, since=since, until=until, measures=("spend",))
    parameters = {"member_id": someone, "since": since, "until": until}
    for measure, expected in (("spend", python.spend), ("orders", python.orders)):
        query = service.order_measure(measure, since is None, until is None)
        assert session.scalar(query, parameters) == expected, measure
    if (since, until) == (None, None):  # 123.45 + 9999 + 1.5 + 12.3456 + 66.68 + 0.99
        assert (python.spend, python.orders) == (10203, 6)
