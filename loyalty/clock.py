"""The service's notion of "now": the system clock, or a clock a test or the demo controls."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from flask import current_app, has_app_context


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class FrozenClock:
    """A clock that stands still until moved; for tests, time travel and the demo's history."""

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware start")
        self.current = start.astimezone(dt.UTC)

    def now(self) -> dt.datetime:
        return self.current

    def advance(self, delta: dt.timedelta) -> dt.datetime:
        self.current += delta
        return self.current

    def set(self, moment: dt.datetime) -> None:
        self.current = moment.astimezone(dt.UTC)


_SYSTEM = SystemClock()


def now() -> dt.datetime:
    """The current time, timezone-aware UTC, from the app's clock when there is an app."""
    if has_app_context():
        clock: Clock = current_app.extensions.get("loyalty.clock", _SYSTEM)
        return clock.now()
    return _SYSTEM.now()


def use_clock(app: object, clock: Clock | None) -> None:
    """Install ``clock`` on ``app`` (None restores the system clock)."""
    extensions: dict[str, object] = app.extensions  # type: ignore[attr-defined]
    if clock is None:
        extensions.pop("loyalty.clock", None)
    else:
        extensions["loyalty.clock"] = clock
