"""Domain events: what happened, told once, inside the unit of work that made it happen.

An area publishes a past-tense event (``publish(session, OrderActivated(...))``) and does not
know who listens. The listeners are one explicit, ordered table of ``(event class,
subscriber)`` pairs, built in `loyalty.wiring` and installed when the app is created; each
subscriber runs at once, in the publisher's transaction, so an event, its effects and its
outbox row commit or roll back together. Events carry ids and numbers, never ORM objects.

A subscriber may publish other events, but not one of a type it is handling (no loops), and
takes locks only in the global order (wallets in member-id order, see DESIGN section 5).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session


@dataclass(frozen=True, kw_only=True)
class Event:
    """The base of every domain event: when it happened and, where there is one, whose."""

    occurred_at: dt.datetime
    member_id: str | None


E = TypeVar("E", bound=Event)
Subscriber = Callable[[Session, Any], None]
Table = Sequence[tuple[type[Event], Subscriber]]

_table: tuple[tuple[type[Event], Subscriber], ...] | None = None
# `subscribers` of each event class, for the table installed (a job publishes hundreds of
# thousands of events of a few classes).
_reached: dict[type[Event], list[Subscriber]] = {}
# The event types being handled in this context, innermost last: publishing one of them
# again from its own subscriber would loop.
_handling: ContextVar[tuple[type[Event], ...]] = ContextVar("handling", default=())


def install(table: Table) -> None:
    """Make ``table`` the subscribers of every publish (done once, at app creation)."""
    global _table
    for kind, subscriber in table:
        if not (isinstance(kind, type) and issubclass(kind, Event)) or not callable(subscriber):
            raise TypeError(f"not a (event class, subscriber) pair: {(kind, subscriber)!r}")
    _table = tuple(table)
    _reached.clear()


def subscribers(kind: type[Event]) -> list[Subscriber]:
    """The subscribers an event of class ``kind`` reaches, in the order they run."""
    if _table is None:
        raise RuntimeError("No subscriber table is installed: create the app first.")
    reached = _reached.get(kind)
    if reached is None:
        reached = [subscriber for wanted, subscriber in _table if issubclass(kind, wanted)]
        _reached[kind] = reached
    return list(reached)


def publish(session: Session, event: Event) -> None:
    """Run every subscriber of ``event`` now, in the caller's transaction, in table order."""
    kind = type(event)
    handling = _handling.get()
    if kind in handling:
        raise RuntimeError(f"{kind.__name__} published while it is being handled (a loop)")
    reached = _reached.get(kind) or subscribers(kind)
    token = _handling.set((*handling, kind))
    try:
        for subscriber in reached:
            subscriber(session, event)
    finally:
        _handling.reset(token)


@contextmanager
def extra_subscribers(table: Table) -> Iterator[None]:
    """Run ``table`` after the installed subscribers for the duration (tests observe events
    with it)."""
    global _table
    before = _table
    if before is None:
        raise RuntimeError("No subscriber table is installed: create the app first.")
    install((*before, *table))
    try:
        yield
    finally:
        _table = before
        _reached.clear()


_BATCH = "loyalty.bus.batch"  # session.info: what subscribers gather while a batch is open


@contextmanager
def batch(session: Session) -> Iterator[None]:
    """Let subscribers gather what they write for the events published inside (`gathering`)
    and write it at the end, one statement each, as a job that publishes thousands of events
    in one transaction needs. Nothing is written if the body raises. Inside another batch,
    the outer one writes."""
    if _BATCH in session.info:
        yield
        return
    session.info[_BATCH] = {}
    try:
        yield
    except BaseException:
        session.info.pop(_BATCH, None)
        raise
    gathered: dict[str, tuple[list[Any], Callable[[list[Any]], None]]] = session.info.pop(_BATCH)
    for items, write in gathered.values():
        if items:
            write(items)


def gathering(session: Session, key: str, write: Callable[[list[Any]], None]) -> list[Any] | None:
    """The list to append to instead of writing at once while a `batch` is open (``write``
    gets it at the batch's end), or None when there is no batch."""
    open_batch = session.info.get(_BATCH)
    if open_batch is None:
        return None
    if key not in open_batch:
        open_batch[key] = ([], write)
    items: list[Any] = open_batch[key][0]
    return items
