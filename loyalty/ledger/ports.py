"""What the ledger needs from the areas above it, plugged in by `loyalty.wiring`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

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
