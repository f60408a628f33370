"""What happens to members, told to the areas above (see `loyalty.bus`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from loyalty.bus import Event


@dataclass(frozen=True, kw_only=True)
class MemberEnrolled(Event):
    member_id: str
    external_id: str
    status: str
    referrer_id: str | None
    enrolled_at: dt.datetime
    actor: str | None


@dataclass(frozen=True, kw_only=True)
class MemberUpdated(Event):
    member_id: str
    external_id: str
    status: str
    referrer_id: str | None
    enrolled_at: dt.datetime
    changed: tuple[str, ...]
