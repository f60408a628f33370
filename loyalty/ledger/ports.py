"""What the ledger needs from the areas above it, plugged in by `loyalty.wiring`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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


@dataclass(frozen=True)
class Companion:
    """A row about the member, one at most, that an area above the ledger reads on every
    accrual: the accrual's wallet lock reads it in the same statement (``entity`` joined on
    ``member_key`` equal to the member's id) and hands it to ``keep`` (None: no such row),
    when it is as current as the lock; otherwise the area reads it itself, as before."""

    entity: Any
    member_key: Any
    keep: Callable[[Session, str, Any], None]


class Companions:
    """The rows the accrual's wallet lock reads along (plugged in by `loyalty.wiring`)."""

    def __init__(self) -> None:
        self._all: tuple[Companion, ...] = ()

    def add(self, companion: Companion) -> None:
        if companion not in self._all:
            self._all += (companion,)

    def all(self) -> tuple[Companion, ...]:
        return self._all


lock_companions = Companions()
