"""Lifecycle triggers on the real database with a frozen clock: each fires at its moment and
once (a pass run twice, time moved, run again), the settings switch each off and change the
windows, birthdays follow the member's time zone and 29 February, a new inactivity spell
after activity; delivered end to end to a real receiver, and the pass works on SQLite."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask import Flask
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty import db
from loyalty.cli import main
from loyalty.clock import FrozenClock, use_clock
from loyalty.db import get_database
from loyalty.events import lifecycle, rules, service
from loyalty.events.catalogue import CATALOGUE
from loyalty.events.models import LIFECYCLE_TYPES, LifecycleMark, LifecycleSent, OutboxEvent
from loyalty.ledger import service as ledger
from loyalty.ledger.service import orders as ledger_orders
from loyalty.members import service as members
from loyalty.members.models import Member
from tests.events.conftest import ACTOR, make_endpoint, received, url
from tests.support import START

DAY = dt.timedelta(days=1)
FIRST_ORDER = "lifecycle.first_order"
EXPIRING = "points.expiring_soon"
BIRTHDAY = "member.birthday"
INACTIVE = "member.inactive"


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def told(session: Session, event_type: str) -> list[OutboxEvent]:
    """The outbox events of ``event_type``, in the order they were recorded."""
    return list(
        session.scalars(
            select(OutboxEvent).where(OutboxEvent.type == event_type).order_by(OutboxEvent.seq)
        )
    )


def run(session: Session, event_type: str, *, batch_size: int = 50) -> list[OutboxEvent]:
    """One pass of the trigger; the events it recorded."""
    before = len(told(session, event_type))
    sent = lifecycle.run_trigger(session, event_type, batch_size=batch_size)
    events = told(session, event_type)[before:]
    assert sent == len(events)
    return events


def enrol(session: Session, external_id: str, **profile: Any) -> Member:
    member, created = members.enroll_member(session, external_id=external_id, **profile)
    assert created
    return member


def order(session: Session, member: Member, order_id: str, total: int = 10000, **kw: Any) -> None:
    ledger.accrue_order(
        session, member_id=member.id, order_id=order_id, total=total, currency="USD", **kw
    )


def configure(session: Session, **changes: Any) -> None:
    service.update_lifecycle_settings(session, changes=changes, actor=ACTOR)


# --- first orders ----------------------------------------------------------------------------


def test_a_first_order_opens_the_care_window_once(session: Session, clock: FrozenClock) -> None:
    eve = enrol(session, "eve")
    order(session, eve, "o-1")
    [event] = run(session, FIRST_ORDER)
    assert (event.member_id, event.occurred_at) == (eve.id, START)
    assert event.data == {
        "order_id": "o-1",
        "care_window_ends_at": iso(START + dt.timedelta(hours=72)),
        "channel_id": "chn_default",
        "placed_at": iso(START),
    }
    assert run(session, FIRST_ORDER) == []
    clock.advance(DAY)
    order(session, eve, "o-2")  # not her first
    assert run(session, FIRST_ORDER) == []


def test_only_the_first_of_several_orders_and_only_while_the_window_is_open(
    session: Session, clock: FrozenClock
) -> None:
    gus, fay = enrol(session, "gus"), enrol(session, "fay")
    order(session, gus, "g-1")
    order(session, gus, "g-2")
    # Reported four days after it was placed: its care window is over.
    order(session, fay, "f-1", placed_at=START - 4 * DAY)
    events = run(session, FIRST_ORDER)
    assert [(e.member_id, e.data["order_id"]) for e in events] == [(gus.id, "g-1")]


def test_an_order_committed_after_a_newer_one_was_read_is_still_found(
    session: Session, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    eve = enrol(session, "eve")
    order(session, eve, "e-1")
    assert [e.member_id for e in run(session, FIRST_ORDER)] == [eve.id]
    # Hal's order key was made a minute before Eve's, but his transaction committed only
    # now, after the pass had read Eve's order.
    newest = ledger.latest_order_pk(session)
    assert newest is not None
    earlier = rules.rewound_id(newest, dt.timedelta(minutes=1))
    made = db.new_id
    monkeypatch.setattr(
        ledger_orders, "new_id", lambda prefix: earlier if prefix == "ord" else made(prefix)
    )
    hal = enrol(session, "hal")
    order(session, hal, "h-1")
    monkeypatch.undo()
    assert [e.member_id for e in run(session, FIRST_ORDER)] == [hal.id]
    mark = session.get(LifecycleMark, FIRST_ORDER)
    assert mark is not None and mark.cursor == rules.rewound_id(newest, rules.ORDER_OVERLAP)


def test_first_orders_are_found_across_batches(session: Session, clock: FrozenClock) -> None:
    gus, ida = enrol(session, "gus"), enrol(session, "ida")
    order(session, gus, "g-1")
    order(session, gus, "g-2")
    order(session, ida, "i-1")
    events = run(session, FIRST_ORDER, batch_size=1)
    assert [(e.member_id, e.data["order_id"]) for e in events] == [(gus.id, "g-1"), (ida.id, "i-1")]
    assert run(session, FIRST_ORDER, batch_size=1) == []


# --- points expiring soon --------------------------------------------------------------------

# Orders on START earn points that activate 14 days later and expire at the end of that day
# 36 months on (the default programme).
EXPIRY = utc(2029, 3, 25)


def _earn_and_activate(session: Session, clock: FrozenClock) -> tuple[Member, Member]:
    ann, bob = enrol(session, "ann"), enrol(session, "bob")
    order(session, ann, "a-1")  # 100 points
    clock.advance(dt.timedelta(hours=1))
    order(session, ann, "a-2", total=5000)  # 50 more, expiring with the first
    clock.advance(2 * DAY)
    order(session, bob, "b-1")
    clock.advance(15 * DAY)
    for member in (ann, bob):
        ledger.get_balance(session, member.id)  # settles: the points activate
    ledger.redeem(session, member_id=ann.id, points=30)
    return ann, bob


def test_points_are_announced_n_days_before_they_expire_once(
    session: Session, clock: FrozenClock
) -> None:
    ann, bob = _earn_and_activate(session, clock)
    assert run(session, EXPIRING) == []
    clock.set(EXPIRY - 30 * DAY - dt.timedelta(seconds=1))
    assert run(session, EXPIRING) == []
    clock.set(EXPIRY - 30 * DAY)
    [event] = run(session, EXPIRING)
    assert (event.member_id, event.occurred_at) == (ann.id, EXPIRY - 30 * DAY)
    assert event.data == {"points": 120, "expires_at": iso(EXPIRY)}  # 150 earned, 30 spent
    assert run(session, EXPIRING) == []
    clock.advance(2 * DAY)
    [later] = run(session, EXPIRING)
    assert later.member_id == bob.id
    assert later.data == {"points": 100, "expires_at": iso(EXPIRY + 2 * DAY)}
    clock.advance(10 * DAY)
    assert run(session, EXPIRING) == []


def test_spent_pending_and_expired_points_are_not_announced(
    session: Session, clock: FrozenClock
) -> None:
    ann, bob = _earn_and_activate(session, clock)
    ledger.redeem(session, member_id=ann.id, points=120)  # all she had
    clock.set(EXPIRY - 27 * DAY)
    events = run(session, EXPIRING)
    assert [e.member_id for e in events] == [bob.id]
    # A pass that comes after points expired does not announce them.
    clock.set(EXPIRY + 3 * DAY)
    assert run(session, EXPIRING) == []


def test_the_notice_period_follows_the_settings(session: Session, clock: FrozenClock) -> None:
    ann, _bob = _earn_and_activate(session, clock)
    configure(session, expiring_soon_days=60)
    clock.set(EXPIRY - 60 * DAY)
    [event] = run(session, EXPIRING)
    assert (event.member_id, event.occurred_at) == (ann.id, EXPIRY - 60 * DAY)
    # Shortened: nothing is announced twice, and the next expiry is announced at 10 days.
    configure(session, expiring_soon_days=10)
    clock.set(EXPIRY + 2 * DAY - 10 * DAY - dt.timedelta(seconds=1))
    assert run(session, EXPIRING) == []
    clock.advance(dt.timedelta(seconds=1))
    assert len(run(session, EXPIRING)) == 1


def test_expiring_soon_switched_off_skips_what_happens_meanwhile(
    session: Session, clock: FrozenClock
) -> None:
    _earn_and_activate(session, clock)
    run(session, EXPIRING)
    configure(session, expiring_soon_enabled=False)
    clock.set(EXPIRY - 30 * DAY)
    assert run(session, EXPIRING) == []
    configure(session, expiring_soon_enabled=True)
    clock.advance(DAY)
    assert run(session, EXPIRING) == []  # ann's came due while it was off
    clock.advance(DAY)
    assert len(run(session, EXPIRING)) == 1  # bob's


# --- birthdays -------------------------------------------------------------------------------


def test_birthdays_begin_in_the_members_time_zone(session: Session, clock: FrozenClock) -> None:
    # START is 2026-03-10 12:00 UTC: 11 March began an hour ago in Auckland (UTC+13).
    kiri = enrol(session, "kiri", birthday=dt.date(1990, 3, 11), timezone="Pacific/Auckland")
    lou = enrol(session, "lou", birthday=dt.date(1985, 3, 11), timezone="UTC")
    mia = enrol(session, "mia", birthday=dt.date(1990, 3, 12), timezone="Pacific/Auckland")
    ned = enrol(session, "ned", birthday=dt.date(1990, 3, 11), timezone="America/Los_Angeles")
    [event] = run(session, BIRTHDAY)
    assert (event.member_id, event.occurred_at) == (kiri.id, utc(2026, 3, 10, 11))
    assert event.data == {
        "birthday": "1990-03-11",
        "celebrated_on": "2026-03-11",
        "timezone": "Pacific/Auckland",
    }
    assert run(session, BIRTHDAY) == []
    clock.set(utc(2026, 3, 11))
    assert [e.member_id for e in run(session, BIRTHDAY)] == [lou.id]
    clock.set(utc(2026, 3, 11, 11))  # 11 March began in Los Angeles at 07:00 UTC
    assert [e.member_id for e in run(session, BIRTHDAY)] == [ned.id, mia.id]
    assert run(session, BIRTHDAY) == []
    # Once a year: next year's comes when 11 March 2027 begins in Auckland.
    clock.set(utc(2027, 3, 10, 10, 59))
    assert kiri.id not in [e.member_id for e in run(session, BIRTHDAY)]
    clock.set(utc(2027, 3, 10, 11))
    [again] = run(session, BIRTHDAY)
    assert (again.member_id, again.data["celebrated_on"]) == (kiri.id, "2027-03-11")


def test_29_february_birthdays_fall_on_28_february_in_common_years(
    session: Session, clock: FrozenClock
) -> None:
    lea = enrol(session, "lea", birthday=dt.date(2000, 2, 29))
    max_ = enrol(session, "max", birthday=dt.date(2001, 2, 28))
    clock.set(utc(2027, 2, 28, 0, 1))
    events = run(session, BIRTHDAY)
    assert {(e.member_id, e.data["celebrated_on"]) for e in events} == {
        (lea.id, "2027-02-28"),
        (max_.id, "2027-02-28"),
    }
    clock.set(utc(2028, 2, 28, 0, 1))
    assert [e.member_id for e in run(session, BIRTHDAY)] == [max_.id]
    clock.set(utc(2028, 2, 29, 0, 1))
    [event] = run(session, BIRTHDAY)
    assert (event.member_id, event.data["celebrated_on"]) == (lea.id, "2028-02-29")


def test_a_birthday_already_over_is_not_sent_and_batches_go_on(
    session: Session, clock: FrozenClock
) -> None:
    born = [
        enrol(session, f"m{i}", birthday=dt.date(1990 + i, 3, 11), timezone="UTC") for i in range(5)
    ]
    suspended = enrol(session, "sue", birthday=dt.date(1990, 3, 11), timezone="UTC")
    members.update_member(session, member_id=suspended.id, changes={"status": "suspended"})
    clock.set(utc(2026, 3, 12, 0, 30))  # 11 March is over in UTC: too late
    assert run(session, BIRTHDAY) == []
    clock.set(utc(2027, 3, 11, 8))
    events = run(session, BIRTHDAY, batch_size=2)
    assert sorted(e.member_id for e in events) == sorted(m.id for m in born)


def test_a_pass_that_fails_half_way_sends_the_rest_once(
    session: Session, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    born = [
        enrol(session, f"m{i}", birthday=dt.date(1990 + i, 3, 11), timezone="Pacific/Auckland")
        for i in range(5)
    ]
    found = members.active_members_born_on
    pages: list[list[Member]] = []

    def failing_after_a_page(*args: Any, **kwargs: Any) -> list[Member]:
        if pages:  # the second batch
            raise ConnectionError("the database went away")
        page = found(*args, **kwargs)
        if page:
            pages.append(page)
        return page

    monkeypatch.setattr(members, "active_members_born_on", failing_after_a_page)
    with pytest.raises(ConnectionError):
        run(session, BIRTHDAY, batch_size=2)
    assert len(told(session, BIRTHDAY)) == 2  # the first batch committed
    monkeypatch.setattr(members, "active_members_born_on", found)
    run(session, BIRTHDAY, batch_size=2)
    events = told(session, BIRTHDAY)
    assert sorted(e.member_id for e in events) == sorted(m.id for m in born)


def test_birthdays_switched_off(session: Session, clock: FrozenClock) -> None:
    enrol(session, "kiri", birthday=dt.date(1990, 3, 11), timezone="Pacific/Auckland")
    configure(session, birthday_enabled=False)
    assert run(session, BIRTHDAY) == []
    configure(session, birthday_enabled=True)
    assert run(session, BIRTHDAY) == []  # its day began while the trigger was off


# --- inactivity ------------------------------------------------------------------------------


def test_members_without_activity_for_n_days_once_per_spell(
    session: Session, clock: FrozenClock
) -> None:
    cal, dan = enrol(session, "cal"), enrol(session, "dan")
    order(session, dan, "d-1")
    assert run(session, INACTIVE) == []
    clock.set(START + 90 * DAY - dt.timedelta(seconds=1))
    assert run(session, INACTIVE) == []
    clock.set(START + 90 * DAY)
    events = run(session, INACTIVE)
    assert {e.member_id for e in events} == {cal.id, dan.id}
    for event in events:
        assert event.occurred_at == START + 90 * DAY
        assert event.data == {"last_activity_at": iso(START), "inactive_days": 90}
    assert run(session, INACTIVE) == []
    # New activity, then 90 days without: a new spell for dan, none for cal.
    clock.set(START + 100 * DAY)
    order(session, dan, "d-2")
    clock.set(START + 190 * DAY)
    [spell] = run(session, INACTIVE)
    assert (spell.member_id, spell.data["last_activity_at"]) == (dan.id, iso(START + 100 * DAY))
    clock.advance(400 * DAY)
    assert run(session, INACTIVE) == []


def test_the_inactivity_threshold_follows_the_settings(
    session: Session, clock: FrozenClock
) -> None:
    cal = enrol(session, "cal")
    eli = enrol(session, "eli", enrolled_at=START - 200 * DAY)
    suspended = enrol(session, "sue", enrolled_at=START - 200 * DAY)
    members.update_member(session, member_id=suspended.id, changes={"status": "suspended"})
    configure(session, inactive_days=30)
    first = run(session, INACTIVE)  # the first pass catches up with who is inactive already
    assert [(e.member_id, e.data["inactive_days"]) for e in first] == [(eli.id, 30)]
    clock.set(START + 30 * DAY)
    assert [e.member_id for e in run(session, INACTIVE)] == [cal.id]
    configure(session, inactive_enabled=False)
    enrol(session, "fin")
    clock.advance(31 * DAY)
    assert run(session, INACTIVE) == []
    configure(session, inactive_enabled=True)
    assert run(session, INACTIVE) == []  # fin's spell reached 30 days while it was off


# --- the job, end to end ---------------------------------------------------------------------


def test_the_job_sends_each_trigger_and_webhooks_deliver_them(
    app: Flask, session: Session, receiver: HTTPServer, clock: FrozenClock
) -> None:
    endpoint = make_endpoint(
        session, url(receiver), ["lifecycle.*", "member.birthday", "member.inactive"]
    )
    kiri = enrol(session, "kiri", birthday=dt.date(1990, 3, 11), timezone="Pacific/Auckland")
    order(session, kiri, "k-1")
    enrol(session, "old", enrolled_at=START - 100 * DAY)
    result = app.test_cli_runner().invoke(main, ["jobs", "run", "--once"])
    assert result.exit_code == 0, result.output
    assert "lifecycle first orders: 1; lifecycle birthdays: 1; lifecycle inactive members: 1" in (
        result.output
    )
    got = received(receiver)
    assert sorted(r.event["type"] for r in got) == [FIRST_ORDER, BIRTHDAY, INACTIVE]
    for request in got:  # signed (checked without the verifiers' real-time tolerance)
        signature = rules.sign(
            endpoint.secret,
            event_id=request.headers["webhook-id"],
            timestamp=int(request.headers["webhook-timestamp"]),
            body=request.body,
        )
        assert request.headers["webhook-signature"] == signature
    again = app.test_cli_runner().invoke(main, ["jobs", "run", "--once"])
    assert "lifecycle" not in again.output
    assert len(received(receiver)) == 3


def test_the_pass_works_on_sqlite(sqlite_app: Flask) -> None:
    frozen = FrozenClock(START)
    use_clock(sqlite_app, frozen)
    with sqlite_app.app_context():
        session = get_database(sqlite_app).sessionmaker()
        try:
            kiri = enrol(
                session, "kiri", birthday=dt.date(1990, 3, 11), timezone="Pacific/Auckland"
            )
            order(session, kiri, "k-1")
            enrol(session, "old", enrolled_at=START - 100 * DAY)
            counts = lifecycle.run_due(session, batch_size=1)
            assert counts == {
                "lifecycle first orders": 1,
                "lifecycle points expiring soon": 0,
                "lifecycle birthdays": 1,
                "lifecycle inactive members": 1,
                "lifecycle records purged": 0,
            }
            frozen.advance(15 * DAY)
            ledger.get_balance(session, kiri.id)  # the points activate
            frozen.set(EXPIRY - 30 * DAY)
            counts = lifecycle.run_due(session, batch_size=1)
            assert counts == {
                "lifecycle first orders": 0,
                "lifecycle points expiring soon": 1,
                "lifecycle birthdays": 0,
                "lifecycle inactive members": 1,  # kiri, 90 days after her order
                "lifecycle records purged": 3,  # those sent in 2026
            }
            assert set(lifecycle.run_due(session).values()) == {0}
            sent = session.scalar(select(func.count()).select_from(LifecycleSent))
            assert sent == 2
        finally:
            session.close()
            use_clock(sqlite_app, None)


def test_old_sent_records_are_purged(session: Session, clock: FrozenClock) -> None:
    kiri = enrol(session, "kiri", birthday=dt.date(1990, 3, 11), timezone="Pacific/Auckland")
    run(session, BIRTHDAY)
    clock.advance(lifecycle.RETENTION + DAY)
    assert lifecycle.purge_sent(session) == 1
    assert session.scalar(select(func.count()).select_from(LifecycleSent)) == 0
    assert told(session, BIRTHDAY)[0].member_id == kiri.id


def test_every_lifecycle_type_has_a_trigger_and_a_switch(session: Session) -> None:
    assert list(lifecycle.TRIGGERS) == list(LIFECYCLE_TYPES)
    assert set(LIFECYCLE_TYPES) <= set(CATALOGUE)
    settings = service.get_lifecycle_settings(session)
    assert all(getattr(settings, trigger.switch) for trigger in lifecycle.TRIGGERS.values())
