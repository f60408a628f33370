"""What the ledger needs from the areas above it, plugged in by `loyalty.wiring`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
    the one the statement's snapshot saw, and no transaction that snapshot did not see held
    its lock when the statement read the row: the lock was not waited for).
    When they are not, the area reads afresh, as it would without the companion. ``wanted``
    says whether the programme needs it (the statement is built once for each set of
    companions wanted); ``parameters`` gives values its expressions need besides
    `LOCK_NOW`."""

    name: str
    extend: Callable[[Select[Any], ColumnElement[str]], Select[Any]]
    width: int
    keep: Callable[[Session, str, tuple[Any, ...], bool], None]
    wanted: Callable[[Session], bool] = _always
    # The statement's parameters it needs, given the member's id and when the order was
    # placed (the lock's moment for an order placed now).
    parameters: Callable[[Session, str, dt.datetime], dict[str, Any]] | None = None


class Companions:
    """The companions of the accrual's wallet lock (plugged in by `loyalty.wiring`)."""

    def __init__(self) -> None:
        self._all: tuple[Companion, ...] = ()

    def add(self, companion: Companion) -> None:
        if companion.name not in {known.name for known in self._all}:
            self._all += (companion,)

    def wanted(self, session: Session) -> tuple[Companion, ...]:
        return tuple(companion for companion in self._all if companion.wanted(session))


lock_companions = Companions()
