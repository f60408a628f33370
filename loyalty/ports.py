"""Ports: a function a lower area needs from a higher one, plugged in when the app is created.

The ledger must know what an order earns, which the earning rules (above it) decide; members'
reads show balances and tiers, which the ledger and the tiers (above members) keep. Imports go
down only, so the lower area declares a `Port` and `loyalty.wiring` plugs the higher area's
function into it. A `Port` has one provider; a `Ports` asks every provider plugged in (each
area that may refer to a tier answers whether it does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class Port(Generic[P, R]):
    """One function, provided by a higher area."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._provider: Callable[P, R] | None = None

    def plug(self, provider: Callable[P, R]) -> None:
        self._provider = provider

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._provider is None:
            raise RuntimeError(f"The port {self.name!r} is not plugged in: create the app first.")
        return self._provider(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Port {self.name} -> {getattr(self._provider, '__qualname__', None)}>"


class Ports(Generic[P, R]):
    """Several providers of one question, each asked in the order they were plugged."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._providers: list[Callable[P, R]] = []

    def plug(self, provider: Callable[P, R]) -> None:
        if provider not in self._providers:
            self._providers.append(provider)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> list[R]:
        return [provider(*args, **kwargs) for provider in self._providers]

    def __repr__(self) -> str:
        names = [getattr(p, "__qualname__", repr(p)) for p in self._providers]
        return f"<Ports {self.name} -> {names}>"
