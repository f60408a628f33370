"""A member's wallet opened at enrolment (60d614c): one wallet whatever the enrolments,
concurrent or repeated, and the ledger's invariants hold (a review's probes)."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.db import get_database
from loyalty.ledger.invariants import verify
from loyalty.ledger.models import Wallet
from loyalty.members import service as members_service
from loyalty.members.models import Member
from tests.ledger.conftest import order
from tests.support import race


@pytest.mark.concurrency
def test_concurrent_enrolments_of_one_external_id_open_one_wallet(app: Flask) -> None:
    """Four enrolments of the same external id at once: one member, one wallet, the
    others answered with that member (or a conflict), no error from the wallet insert."""

    def enrol(_index: int, session: Session) -> str:
        return members_service.enroll_member(session, external_id="r5-same")[0].id

    outcomes = race(app, 4, enrol)
    ids = {o for o in outcomes if isinstance(o, str)}
    errors = [o for o in outcomes if not isinstance(o, str)]
    assert len(ids) == 1, outcomes
    assert not [e for e in errors if "wallet" in str(e).lower()], errors
    with app.app_context():
        session = get_database(app).sessionmaker()
        try:
            (member_id,) = ids
            members = session.scalar(
                select(func.count()).select_from(Member).where(Member.external_id == "r5-same")
            )
            wallets = session.scalar(
                select(func.count()).select_from(Wallet).where(Wallet.member_id == member_id)
            )
            assert (members, wallets) == (1, 1)
            assert verify(session) == []
        finally:
            session.close()


def test_enrolling_the_same_external_id_twice_keeps_one_wallet(session: Session) -> None:
    first, _ = members_service.enroll_member(session, external_id="r5-twice")
    order(session, first.id, 10000, order_id="r5-twice-1")
    second, _ = members_service.enroll_member(session, external_id="r5-twice")
    assert second.id == first.id
    wallets = list(session.scalars(select(Wallet).where(Wallet.member_id == first.id)))
    assert len(wallets) == 1 and wallets[0].pending + wallets[0].available == 100
    assert verify(session) == []
