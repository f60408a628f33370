"""Review 8: the referral an activation qualifies, after the job's settlement in one
statement commits."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from loyalty.bus import extra_subscribers
from loyalty.clock import FrozenClock
from loyalty.ledger import service as ledger
from loyalty.ledger.events import OrderRecorded
from loyalty.ledger.models import Wallet
from tests.referrals.conftest import available, make_member, place_order, referral_of, terms
from tests.settle_in_bulk.helpers import assert_same, in_one_statement, last_seq, outbox, statements

DAY = dt.timedelta(days=1)


def wallet_id(session: Session, member_id: str) -> str:
    return ledger.points_summaries(session, [member_id])[member_id].id


def test_referrals_qualified_and_not_alone_and_in_bulk(
    session: Session, clock: FrozenClock
) -> None:
    terms(session, referrer_points=500, referee_points=200, min_order_total=5000)
    pairs = []
    for _ in range(2):
        ann = make_member(session)
        bob = make_member(session, referrer=ann)  # qualifies
        cid = make_member(session, referrer=ann)  # order below the minimum: does not
        dan = make_member(session, referrer=ann)  # refunded below it before activation
        pairs.append((ann, bob, cid, dan))
    for _ann, bob, cid, dan in pairs:
        place_order(session, bob.id, 6000)
        place_order(session, cid.id, 4000)
        order_id = place_order(session, dan.id, 6000)
        ledger.refund_order(
            session, client_id="shop", order_id=order_id, refund_id=f"r-{order_id}", amount=2000
        )
    clock.advance(dt.timedelta(days=31))
    since = last_seq(session)
    (ann1, bob1, cid1, dan1), (ann2, bob2, cid2, dan2) = pairs
    for m in (bob1, cid1, dan1):
        ledger.settle_wallet(session, wallet_id=wallet_id(session, m.id), actor="jobs")
    with statements(session) as sent:
        assert ledger.settle_due_batch(session, batch_size=50) == 3
    assert in_one_statement(sent)
    for one, other in ((bob1, bob2), (cid1, cid2), (dan1, dan2)):
        assert_same(session, one.id, other.id, since)
        r1, r2 = referral_of(session, one.id), referral_of(session, other.id)
        assert (r1.status, r1.referrer_points, r1.referee_points, r1.qualified_at) == (
            r2.status,
            r2.referrer_points,
            r2.referee_points,
            r2.qualified_at,
        )
    assert referral_of(session, bob2.id).status == "qualified"
    assert referral_of(session, cid2.id).status == "pending"
    assert available(session, ann1.id) == available(session, ann2.id) == 500
    assert [r[0] for r in outbox(session, ann1.id, since)] == [
        r[0] for r in outbox(session, ann2.id, since)
    ]


def _capped_group(session: Session, count: int) -> tuple[str, list[str]]:
    ann = make_member(session)
    referees = [make_member(session, referrer=ann) for _ in range(count)]
    for referee in referees:
        place_order(session, referee.id, 6000)
    return ann.id, [r.id for r in referees]


def test_which_referee_the_capped_referrer_is_rewarded_for_is_the_python_paths(
    session: Session, clock: FrozenClock
) -> None:
    """A referrer with a total cap of 1 and many referees whose orders activate in the same
    batch: the Python path qualifies them in the batch's order (member id: the wallets', the
    events', the after-commit follow-ups'); the statement's answer must give the same one."""
    terms(session, referrer_points=500, referee_points=0, min_order_total=5000, total_cap=1)
    ann1, group1 = _capped_group(session, 30)
    clock.advance(dt.timedelta(days=31))
    # The Python path (a subscriber without a bulk form)
    with extra_subscribers([(OrderRecorded, lambda _s, _e: None)]):
        pass
    import loyalty.ledger.events as ev

    with extra_subscribers([(ev.OrderActivated, lambda _s, _e: None)]), statements(session) as s1:
        while ledger.settle_due_batch(session, batch_size=50):
            pass
    assert not in_one_statement(s1)
    rewarded1 = [m for m in group1 if referral_of(session, m).referrer_points]
    assert rewarded1 == [min(group1)]

    ann2, group2 = _capped_group(session, 30)
    clock.advance(dt.timedelta(days=31))
    with statements(session) as s2:
        while ledger.settle_due_batch(session, batch_size=50):
            pass
    assert in_one_statement(s2)
    rewarded2 = [m for m in group2 if referral_of(session, m).referrer_points]
    assert all(referral_of(session, m).status == "qualified" for m in group2)
    assert rewarded2 == [min(group2)], (rewarded2, min(group2))
    _ = Wallet


def test_a_referee_whose_qualifying_order_activates_no_points(
    session: Session, clock: FrozenClock
) -> None:
    terms(session, referrer_points=500, referee_points=200, min_order_total=0)
    pairs = []
    for _ in range(2):
        ann = make_member(session)
        bob = make_member(session, referrer=ann)
        place_order(session, bob.id, 50)  # no points
        cid = make_member(session, referrer=ann)
        order_id = place_order(session, cid.id, 3000)
        ledger.refund_order(
            session, client_id="shop", order_id=order_id, refund_id=f"r-{order_id}", amount=3000
        )  # nothing left
        pairs.append((ann, bob, cid))
    clock.advance(dt.timedelta(days=31))
    since = last_seq(session)
    (ann1, bob1, cid1), (ann2, bob2, cid2) = pairs
    for m in (bob1, cid1):
        ledger.settle_wallet(session, wallet_id=wallet_id(session, m.id), actor="jobs")
    with statements(session) as sent:
        ledger.settle_due_batch(session, batch_size=50)
    assert in_one_statement(sent) or not any("outbox_told" in s for s in sent)
    for one, other in ((bob1, bob2), (cid1, cid2)):
        assert_same(session, one.id, other.id, since)
        r1, r2 = referral_of(session, one.id), referral_of(session, other.id)
        assert (r1.status, r1.referrer_points, r1.referee_points) == (
            r2.status,
            r2.referrer_points,
            r2.referee_points,
        )
    assert available(session, ann1.id) == available(session, ann2.id)


def test_the_referrer_settled_in_the_same_batch_then_rewarded_after_commit(
    session: Session, clock: FrozenClock
) -> None:
    """The referrer's own wallet is in the batch (its lots activate and expire in the
    statement); the referral qualified after the commit credits it: from the statement's
    balances, not the session's stale ones."""
    terms(session, referrer_points=500, referee_points=200, min_order_total=5000)
    groups = []
    for _ in range(2):
        ann = make_member(session)
        bob = make_member(session, referrer=ann)
        groups.append((ann, bob))
    ledger.update_settings(
        session,
        changes={"expiry_policy": "rolling", "expiry_months": 1, "pending_days": 14},
        actor="t",
    )
    for ann, bob in groups:
        place_order(session, ann.id, 10000, placed_at=clock.now() - 20 * DAY)
        place_order(session, ann.id, 8000)
        place_order(session, bob.id, 6000)
    clock.advance(dt.timedelta(days=60))
    since = last_seq(session)
    (ann1, bob1), (ann2, bob2) = groups
    for m in (ann1, bob1):
        ledger.settle_wallet(session, wallet_id=wallet_id(session, m.id), actor="jobs")
    with statements(session) as sent:
        assert ledger.settle_due_batch(session, batch_size=50) == 2
    assert in_one_statement(sent)
    assert referral_of(session, bob2.id).status == "qualified"
    for one, other in ((ann1, ann2), (bob1, bob2)):
        assert_same(session, one.id, other.id, since)


def test_capped_referrer_order_does_not_depend_on_the_plan(
    session: Session, clock: FrozenClock
) -> None:
    """The members the statement answers (``activated``) come from ``SELECT DISTINCT`` with
    no ORDER BY: their order, that of the after-commit qualifications, is the plan's. With a
    hash aggregate (a plan PostgreSQL may choose on its own for large estimates; forced
    here), the capped referrer's reward goes to another referee than the Python path's
    (member-id order)."""
    from sqlalchemy import event

    terms(session, referrer_points=500, referee_points=0, min_order_total=5000, total_cap=1)
    ann, group = _capped_group(session, 30)
    clock.advance(dt.timedelta(days=31))
    engine = session.get_bind().engine

    def no_sort(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if "outbox_told" in statement:
            cursor.execute("SET LOCAL enable_sort = off")
        return statement, parameters

    event.listen(engine, "before_cursor_execute", no_sort, retval=True)
    try:
        with statements(session) as sent:
            while ledger.settle_due_batch(session, batch_size=50):
                pass
    finally:
        event.remove(engine, "before_cursor_execute", no_sort)
    assert in_one_statement(sent)
    rewarded = [m for m in group if referral_of(session, m).referrer_points]
    assert rewarded == [min(group)], (rewarded, min(group))


def test_capped_referrer_order_with_many_lots_and_fresh_statistics(
    session: Session, clock: FrozenClock
) -> None:
    """The same, with no plan forced: many activating lots a batch and the lots' statistics
    up to date (as autovacuum keeps them), the planner's own choice."""
    from sqlalchemy import text

    terms(session, referrer_points=500, referee_points=0, min_order_total=5000, total_cap=1)
    ann, group = _capped_group(session, 40)
    for referee in group:
        for _ in range(30):
            place_order(session, referee, 1000)
    session.commit()
    session.execute(text("ANALYZE lots"))
    session.execute(text("ANALYZE orders"))
    session.execute(text("ANALYZE wallets"))
    session.commit()
    clock.advance(dt.timedelta(days=31))
    with statements(session) as sent:
        while ledger.settle_due_batch(session, batch_size=50):
            pass
    assert in_one_statement(sent)
    rewarded = [m for m in group if referral_of(session, m).referrer_points]
    assert rewarded == [min(group)], (rewarded, min(group))


def test_control_the_python_path_rewards_the_first_referee_by_member_id(
    session: Session, clock: FrozenClock
) -> None:
    """Control of the test above: the same history through the Python path (a subscriber
    without a bulk form) rewards the first referee by member id."""
    from sqlalchemy import text

    import loyalty.ledger.events as ledger_events

    terms(session, referrer_points=500, referee_points=0, min_order_total=5000, total_cap=1)
    ann, group = _capped_group(session, 40)
    for referee in group:
        for _ in range(30):
            place_order(session, referee, 1000)
    session.commit()
    session.execute(text("ANALYZE lots"))
    session.commit()
    clock.advance(dt.timedelta(days=31))
    with (
        extra_subscribers([(ledger_events.OrderActivated, lambda _s, _e: None)]),
        statements(session) as sent,
    ):
        while ledger.settle_due_batch(session, batch_size=50):
            pass
    assert not in_one_statement(sent)
    rewarded = [m for m in group if referral_of(session, m).referrer_points]
    assert rewarded == [min(group)], (rewarded, min(group))
