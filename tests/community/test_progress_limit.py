"""A badge's progress is kept to its column's range (`PROGRESS_LIMIT`), whichever way it is
stored: the one statement that measures and stores a badge on orders (PostgreSQL) clamps it
in SQL, as `_store_progress` does in Python; the levels are reached on the measure itself."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.community import service
from loyalty.community.models import BadgeAward, BadgeProgress
from loyalty.earning import service as earning_service
from loyalty.ledger import service as ledger
from tests.community.conftest import make_badge


def test_a_spend_above_the_progress_limit_is_stored_as_the_limit(
    session: Session, member: Callable[..., str]
) -> None:
    # Gift cards earn nothing, so orders of any size are accepted (no points above the most
    # one order may earn).
    earning_service.update_earning_settings(
        session, changes={"excluded_categories": ["gift-cards"]}, actor="test"
    )
    badge = make_badge(
        session,
        name="Whale",
        rule="spend",
        event_type=None,
        levels=[{"name": "huge", "threshold": 1_500_000_000_000_000}],
    )
    member_id = member()
    for number in range(2):  # 10^15 yen each: 2 x 10^15 spent, twice the limit
        total = 10**15
        ledger.accrue_order(
            session,
            client_id="cli_test",
            order_id=f"whale-{number}",
            member_id=member_id,
            total=total,
            currency="JPY",
            items=[{"sku": "card", "category": "gift-cards", "quantity": 1, "unit_price": total}],
        )
    progress = session.scalar(
        select(BadgeProgress.value).where(
            BadgeProgress.badge_id == badge.id, BadgeProgress.member_id == member_id
        )
    )
    assert progress == service.PROGRESS_LIMIT
    awarded = session.scalars(select(BadgeAward.level).where(BadgeAward.badge_id == badge.id))
    assert list(awarded) == [1]  # reached on 2 x 10^15, above the limit stored
