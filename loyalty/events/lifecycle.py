"""Lifecycle triggers: outbound events about what came due rather than what a call changed.

- ``lifecycle.first_order``: a member's first order opened its 72-hour care window;
- ``points.expiring_soon``: points expire in N days (``expiring_soon_days``, default 30);
- ``member.birthday``: the member's birthday began in their time zone;
- ``member.inactive``: N days (``inactive_days``, default 90) without activity.

``loyalty jobs run`` and ``loyalty worker`` run `run_due`. Each occurrence becomes one outbox
event (`loyalty.events.outbox.record`), which webhooks deliver like the rest, and one
`LifecycleSent` row in the same transaction: its unique key on (member, type, occurrence)
sends each occurrence once, whatever happens (two workers, a crash between batches, a walk
read twice).

A trigger never looks at every member. It walks one index from its high-water mark
(`LifecycleMark`), so a pass reads only what came due since the last one:

- first orders: orders by key (keys are time-ordered, made in the order's transaction just
  before it commits); ``cursor`` is the key up to which every order has been read, and never
  passes the newest key less `rules.ORDER_OVERLAP`, so that the next pass reads the last
  minutes again and finds an order whose transaction was still open;
- points expiring soon: lots by (expiry moment, wallet) up to now + N days; ``mark_at`` and
  ``cursor`` are the position reached;
- birthdays: the local days that began since ``mark_at`` in each time zone, and for each, the
  members born on that day in those zones (by birthday and time zone); ``cursor`` is the day
  in progress and the member reached on it;
- inactivity: members by last activity up to now - N days; ``mark_at`` and ``cursor`` are the
  position reached.

Work goes in batches, each a short transaction that locks the trigger's mark (``FOR UPDATE
SKIP LOCKED``: a worker finding it locked leaves the trigger to the one holding it), writes the
batch's occurrences and moves the mark on. A trigger switched off moves its mark without
sending, so switching it on again does not send what happened meanwhile.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.db import dialect_insert, retrying, unit_of_work
from loyalty.events import outbox, rules, service
from loyalty.events.models import LifecycleMark, LifecycleSent, LifecycleSettings
from loyalty.ledger import service as ledger
from loyalty.members import service as members
from loyalty.members.rules import OLDEST_BIRTHDAY, time_zones

# Sent records are kept this long (a year and a bit): long after any walk could meet the
# same occurrence again.
RETENTION = dt.timedelta(days=400)
# At most this many batches of one trigger per pass, so that a long catch-up (the first pass
# on a large programme) leaves room for the rest of the job; the next pass goes on.
MAX_BATCHES = 100
FIRST = "first"


@dataclass(frozen=True)
class Occurrence:
    """One thing a trigger tells: about whom, which occurrence (the unique key), when it
    happened and the event's data."""

    member_id: str
    key: str
    occurred_at: dt.datetime
    data: dict[str, Any]


@dataclass
class _Pass:
    """One pass of one trigger: its moment, its batch size and where its walk resumes."""

    now: dt.datetime
    batch_size: int
    batches: int = 0
    resume: str | None = None
    horizon: str | None = None  # first orders: the mark stays before it


@dataclass(frozen=True)
class _Step:
    """What one batch found, whether more may follow, and where the pass resumes."""

    found: list[Occurrence]
    more: bool
    resume: str | None = None


Step = Callable[[Session, LifecycleMark, LifecycleSettings, _Pass], _Step]
Skip = Callable[[Session, LifecycleMark, LifecycleSettings, _Pass], None]


@dataclass(frozen=True)
class Trigger:
    label: str  # in the job's report
    switch: str  # the `LifecycleSettings` field that turns it on
    step: Step
    skip: Skip


def run_due(session: Session, *, batch_size: int = 50) -> dict[str, int]:
    """The job's share (``loyalty jobs run``): a pass of each trigger, then the purge of sent
    records older than `RETENTION`. Safe to run in several processes at once."""
    now = clock.now()
    counts = {
        trigger.label: run_trigger(session, event_type, now=now, batch_size=batch_size)
        for event_type, trigger in TRIGGERS.items()
    }
    counts["lifecycle records purged"] = purge_sent(session, batch_size=batch_size * 20)
    return counts


def run_trigger(
    session: Session, event_type: str, *, now: dt.datetime | None = None, batch_size: int = 50
) -> int:
    """One pass of the trigger of ``event_type``: batches until it has caught up with
    ``now`` (default: the clock's), at most `MAX_BATCHES`, or until another worker holds
    it. Returns how many occurrences were sent."""
    pass_ = _Pass(now or clock.now(), batch_size)
    sent = 0
    while pass_.batches < MAX_BATCHES:
        done = _run_batch(session, event_type, pass_)
        if done is None:
            break
        pass_.batches += 1
        pass_.resume = done.resume
        sent += len(done.found)
        if not done.more:
            break
    return sent


@retrying
def _run_batch(session: Session, event_type: str, pass_: _Pass) -> _Step | None:
    """One batch in one transaction: lock the trigger's mark (None when another worker
    holds it), walk on from it and send what came due. Returns the step, its ``found``
    reduced to what was sent now."""
    trigger = TRIGGERS[event_type]
    with unit_of_work(session):
        mark = _lock_mark(session, event_type)
        if mark is None:
            return None
        settings = service.get_lifecycle_settings(session)
        if getattr(settings, trigger.switch):
            step = trigger.step(session, mark, settings, pass_)
        else:
            trigger.skip(session, mark, settings, pass_)
            step = _Step([], False)
        mark.updated_at = clock.now()
        return _Step(_send(session, event_type, step.found), step.more, step.resume)


def _lock_mark(session: Session, event_type: str) -> LifecycleMark | None:
    """The trigger's mark, locked for this transaction (made on first use); None when
    another transaction holds it."""
    query = (
        select(LifecycleMark)
        .where(LifecycleMark.type == event_type)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    mark = session.scalar(query)
    if mark is None:
        session.execute(
            dialect_insert(session)(LifecycleMark)
            .values(type=event_type, updated_at=clock.now())
            .on_conflict_do_nothing(index_elements=["type"])
        )
        mark = session.scalar(query)
    return mark


def _send(session: Session, event_type: str, found: list[Occurrence]) -> list[Occurrence]:
    """Record the occurrences not sent before, each with its outbox event; returns those."""
    unique = list({(o.member_id, o.key): o for o in found}.values())
    if not unique:
        return []
    now = clock.now()
    rows = [
        {"member_id": o.member_id, "type": event_type, "occurrence": o.key, "sent_at": now}
        for o in unique
    ]
    new = {
        (member_id, key)
        for member_id, key in session.execute(
            dialect_insert(session)(LifecycleSent)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["member_id", "type", "occurrence"])
            .returning(LifecycleSent.member_id, LifecycleSent.occurrence)
        )
    }
    sent = [o for o in unique if (o.member_id, o.key) in new]
    for occurrence in sent:
        outbox.record(
            session,
            type=event_type,
            member_id=occurrence.member_id,
            data=occurrence.data,
            occurred_at=occurrence.occurred_at,
        )
    return sent


def purge_sent(session: Session, *, batch_size: int = 1000) -> int:
    """Delete sent records older than `RETENTION`, in batches; returns how many."""
    purged = 0
    for _ in range(MAX_BATCHES):
        with unit_of_work(session):
            cutoff = clock.now() - RETENTION
            ids = list(
                session.scalars(
                    select(LifecycleSent.id)
                    .where(LifecycleSent.sent_at < cutoff)
                    .order_by(LifecycleSent.sent_at)
                    .limit(batch_size)
                )
            )
            if ids:
                session.execute(delete(LifecycleSent).where(LifecycleSent.id.in_(ids)))
        purged += len(ids)
        if len(ids) < batch_size:
            break
    return purged


def _moment_key(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat()


# --- first orders ----------------------------------------------------------------------------


def _first_orders(
    session: Session, mark: LifecycleMark, settings: LifecycleSettings, pass_: _Pass
) -> _Step:
    if pass_.batches == 0:
        newest = ledger.latest_order_pk(session)
        if newest is None:
            return _Step([], False)
        # Orders made before the horizon have all committed: the mark never passes it, so
        # the next pass reads again the last minutes, where one may still have been open.
        pass_.horizon = rules.rewound_id(newest, rules.ORDER_OVERLAP)
        after = mark.cursor
        if after is None:  # the first pass ever: the orders whose care window may be open
            after = rules.rewound_id(newest, rules.CARE_WINDOW)
    else:
        after = pass_.resume
    walk = ledger.first_orders_after(session, after=after, limit=pass_.batch_size)
    if walk.last is not None:
        settled = min(walk.last, pass_.horizon or walk.last)
        if mark.cursor is None or settled > mark.cursor:
            mark.cursor = settled
    found = [
        Occurrence(
            order.member_id,
            FIRST,
            order.recorded_at,
            {
                "order_id": order.order_id,
                "channel_id": order.channel_id,
                "placed_at": order.placed_at,
                "care_window_ends_at": rules.care_window_ends_at(order.placed_at),
            },
        )
        for order in walk.items
        if rules.care_window_ends_at(order.placed_at) > pass_.now
    ]
    return _Step(found, walk.more, walk.last)


def _skip_first_orders(
    session: Session, mark: LifecycleMark, settings: LifecycleSettings, pass_: _Pass
) -> None:
    mark.cursor = ledger.latest_order_pk(session) or mark.cursor


# --- points expiring soon --------------------------------------------------------------------


def _expiring(
    session: Session, mark: LifecycleMark, settings: LifecycleSettings, pass_: _Pass
) -> _Step:
    notice = dt.timedelta(days=settings.expiring_soon_days)
    until = pass_.now + notice
    after: tuple[dt.datetime, str | None] = (pass_.now, None)
    if mark.mark_at is not None and mark.mark_at >= pass_.now:
        after = (mark.mark_at, mark.cursor)
    if after[0] > until or (after[0] == until and after[1] is None):
        return _Step([], False)  # the notice period was shortened: nothing new yet
    walk = ledger.points_expiring(session, after=after, until=until, limit=pass_.batch_size)
    mark.mark_at, mark.cursor = walk.last if walk.more else (until, None)
    found = [
        Occurrence(
            item.member_id,
            _moment_key(item.expires_at),
            item.expires_at - notice,
            {"points": item.points, "expires_at": item.expires_at},
        )
        for item in walk.items
    ]
    return _Step(found, walk.more)


def _skip_expiring(
    session: Session, mark: LifecycleMark, settings: LifecycleSettings, pass_: _Pass
) -> None:
    until = pass_.now + dt.timedelta(days=settings.expiring_soon_days)
    if mark.mark_at is None or mark.mark_at < until:
        mark.mark_at, mark.cursor = until, None


# --- birthdays -------------------------------------------------------------------------------


def _birthday_cursor(begun: rules.DayBegun, member_id: str) -> str:
    return f"{begun.start.isoformat()}|{begun.day.isoformat()}|{member_id}"


def _birthdays(
    session: Session, mark: LifecycleMark, settings: LifecycleSettings, pass_: _Pass
) -> _Step:
    now = pass_.now
    after = now - rules.BIRTHDAY_LOOKBACK
    if mark.mark_at is not None and mark.mark_at > after:
        after = mark.mark_at
    # Where a day is over already (a pass that came late), its birthdays are not sent.
    days = []
    for begun in rules.days_begun(sorted(time_zones()), after, now):
        zones = tuple(zone for zone in begun.zones if not rules.day_over(begun.day, zone, now))
        if zones:
            days.append(rules.DayBegun(begun.start, begun.day, zones))
    index, reached = 0, None
    if mark.cursor is not None:  # a day in progress: go on from the member reached
        start, day, member_id = mark.cursor.split("|")
        key = (dt.datetime.fromisoformat(start), dt.date.fromisoformat(day))
        at = [i for i, begun in enumerate(days) if (begun.start, begun.day) == key]
        if at:
            index, reached = at[0], member_id or None
    found: list[Occurrence] = []
    while index < len(days):
        begun, room = days[index], pass_.batch_size - len(found)
        born = members.active_members_born_on(
            session,
            birthdays=rules.birthdays_on(begun.day, since_year=OLDEST_BIRTHDAY.year),
            time_zones=list(begun.zones),
            after=reached,
            limit=room,
        )
        found += [
            Occurrence(
                member.id,
                str(begun.day.year),
                begun.start,
                {
                    "birthday": member.birthday,
                    "celebrated_on": begun.day,
                    "timezone": member.timezone,
                },
            )
            for member in born
        ]
        if len(born) == room:  # the batch is full: the next one goes on from here
            mark.cursor = _birthday_cursor(begun, born[-1].id)
            return _Step(found, True)
        index, reached = index + 1, None
        if index < len(days) and days[index].start == begun.start:
            mark.cursor = _birthday_cursor(days[index], "")
        else:  # every day that began by then is done
            mark.mark_at, mark.cursor = begun.start, None
    mark.mark_at, mark.cursor = max(now, mark.mark_at or now), None
    return _Step(found, False)


def _skip_birthdays(
    session: Session, mark: LifecycleMark, settings: LifecycleSettings, pass_: _Pass
) -> None:
    mark.mark_at, mark.cursor = max(pass_.now, mark.mark_at or pass_.now), None


# --- inactivity ------------------------------------------------------------------------------


def _inactive(
    session: Session, mark: LifecycleMark, settings: LifecycleSettings, pass_: _Pass
) -> _Step:
    threshold = dt.timedelta(days=settings.inactive_days)
    until = pass_.now - threshold
    after = None if mark.mark_at is None else (mark.mark_at, mark.cursor)
    if after is not None and (after[0] > until or (after[0] == until and after[1] is None)):
        return _Step([], False)  # the threshold was raised: nothing new yet
    walk = ledger.last_activities(session, after=after, until=until, limit=pass_.batch_size)
    mark.mark_at, mark.cursor = walk.last if walk.more else (until, None)
    found = [
        Occurrence(
            item.member_id,
            _moment_key(item.at),
            item.at + threshold,
            {"last_activity_at": item.at, "inactive_days": settings.inactive_days},
        )
        for item in walk.items
    ]
    return _Step(found, walk.more)


def _skip_inactive(
    session: Session, mark: LifecycleMark, settings: LifecycleSettings, pass_: _Pass
) -> None:
    until = pass_.now - dt.timedelta(days=settings.inactive_days)
    if mark.mark_at is None or mark.mark_at < until:
        mark.mark_at, mark.cursor = until, None


TRIGGERS: dict[str, Trigger] = {
    "lifecycle.first_order": Trigger(
        "lifecycle first orders", "first_order_enabled", _first_orders, _skip_first_orders
    ),
    "points.expiring_soon": Trigger(
        "lifecycle points expiring soon", "expiring_soon_enabled", _expiring, _skip_expiring
    ),
    "member.birthday": Trigger(
        "lifecycle birthdays", "birthday_enabled", _birthdays, _skip_birthdays
    ),
    "member.inactive": Trigger(
        "lifecycle inactive members", "inactive_enabled", _inactive, _skip_inactive
    ),
}
