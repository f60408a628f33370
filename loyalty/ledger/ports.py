"""What the ledger needs from the areas above it, plugged in by `loyalty.wiring`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import ColumnElement, Select
from sqlalchemy.orm import Session

from loyalty.ports import Port


class Component(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


class OrderQuote(Protocol):
    """What an order earns: the points, each item's share, and the rules that gave them."""

    @property
    def points(self) -> int: ...
    @property
    def line_points(self) -> Sequence[int]: ...
    @property
    def components(self) -> Sequence[Component]: ...
    def describe(self) -> str: ...


# What an order earns (the earning rules' `price_order`). With ``charge`` (inside the
# accrual, the wallet locked) budgeted campaigns are charged; without it nothing is written.
price_order: Port[..., OrderQuote] = Port("ledger.price_order")


def _always(session: Session) -> bool:
    return True


# The parameter of the lock's statement holding the time the lock was asked (companions
# that read "as of now" compare with it).
LOCK_NOW = "lock_now"


@dataclass(frozen=True)
class Companion:
    """Something about the member that an area above the ledger reads on every accrual,
    read by the accrual's wallet lock in its own statement instead of one more round trip.

    ``extend`` adds ``width`` columns (and any join) to the lock's statement, given the locked
    member's id column; its expressions may use the parameter `LOCK_NOW`. ``keep`` gets their
    values with ``current``: whether they are as current as the lock (the wallet row locked is
    the one the statement's snapshot saw; a transaction that changed them under the lock
    changed the wallet too). When they are not, the area reads afresh, as it would without
    the companion. ``wanted`` says whether the programme needs it (the statement is built
    once for each set of companions wanted); ``parameters`` gives values its expressions
    need besides `LOCK_NOW`."""

    name: str
    extend: Callable[[Select[Any], ColumnElement[str]], Select[Any]]
    width: int
    keep: Callable[[Session, str, tuple[Any, ...], bool], None]
    wanted: Callable[[Session], bool] = _always
    # The statement's parameters it needs, given the member's id and when the order was
    # placed (the lock's moment for an order placed now).
    parameters: Callable[[Session, str, dt.datetime], dict[str, Any]] | None = None


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


class Plugged(Generic[N]):
    """What the areas above plugged in (by `loyalty.wiring`), once each by name, in order."""

    def __init__(self) -> None:
        self.all: tuple[N, ...] = ()

    def add(self, item: N) -> None:
        if item.name not in {known.name for known in self.all}:
            self.all += (item,)


class Companions(Plugged[Companion]):
    """The companions of the accrual's wallet lock."""

    def wanted(self, session: Session) -> tuple[Companion, ...]:
        return tuple(companion for companion in self.all if companion.wanted(session))


lock_companions = Companions()


# The parameters of the accrual's statement that riders may use too: the time of the accrual
# and the member's id.
ACCRUAL_NOW = "s_now"
ACCRUAL_MEMBER = "s_member_id"


@dataclass(frozen=True)
class Rider:
    """A row that an area above the ledger writes for every order recorded (its outbox row),
    written by the accrual's own statement, as one more data-modifying WITH clause, instead
    of a round trip of its own (PostgreSQL; the ORM's path leaves it to the area).

    ``clause`` builds (once) the INSERT; its values come from parameters named
    ``<name>_...``, `ACCRUAL_NOW` and `ACCRUAL_MEMBER`. ``returning`` builds (once) what the
    statement computes besides (its values are not read: a ``pg_notify``, say).
    ``parameters`` gets the order's event before the statement runs and gives the values;
    the area then counts the row as written, and writes nothing more for the event."""

    name: str
    clause: Callable[[], Any]
    returning: Callable[[], tuple[ColumnElement[Any], ...]]
    parameters: Callable[[Session, Any], dict[str, Any]]


# The riders of the accrual's statement.
accrual_riders: Plugged[Rider] = Plugged()


# The columns of ``told``, the rows a settlement in one statement (`InBulk`) offers its
# riders: one per event the settlement tells, in the order the events happened
# (``position``). ``event`` is ``order_activated`` (an `OrderActivated`: ``order_id``,
# ``points``) or ``points_expired`` (a `PointsExpired`: ``points``, ``reason``); each has the
# member's balance right after it, and happened at the parameter `SETTLED_NOW`.
TOLD_COLUMNS = (
    "position",
    "member_id",
    "event",
    "order_id",
    "points",
    "reason",
    "balance_available",
    "balance_pending",
    "balance_held",
)
SETTLED_NOW = "settled_now"


@dataclass(frozen=True)
class InBulk:
    """What a subscriber of the job's activations and expiries (`OrderActivated`,
    `PointsExpired`) does for a batch of wallets the job settles in one statement
    (PostgreSQL) instead of once an event. The job settles that way only when every
    subscriber of both events has one (a subscriber without one gets its events one by one).

    ``clause`` builds (once) the statement's data-modifying WITH clauses (``name AS (...)``,
    comma-separated SQL) that read ``told`` (`TOLD_COLUMNS`) and the parameters
    ``parameters`` gives; ``notices`` (SQL) is a value the statement computes besides, not read
    (a ``pg_notify``). ``activated`` gets the members with an order activated once the
    statement ran."""

    name: str
    subscriber: Callable[..., None]
    clause: Callable[[], str] | None = None
    notices: Callable[[], str] | None = None
    parameters: Callable[[Session], dict[str, Any]] | None = None
    activated: Callable[[Session, list[str], str | None], None] | None = None


# The subscribers that can do their part of a settlement in one statement.
in_bulk: Plugged[InBulk] = Plugged()
