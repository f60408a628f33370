"""Pure rules of outbound events and webhooks: which types an endpoint receives, the Standard
Webhooks signature, secrets, the retry schedule, the disable rule and which addresses a
webhook may reach; and the calendar of lifecycle triggers (care windows, which days began
where, whose birthday a day is). No database, no Flask."""

from __future__ import annotations

import base64
import calendar
import datetime as dt
import hashlib
import hmac
import ipaddress
import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from ulid import ULID

from loyalty.events.catalogue import CATALOGUE

SECRET_PREFIX = "whsec_"
# Random bytes in a signing secret (Standard Webhooks asks for 24 to 64).
SECRET_BYTES = 32
SIGNATURE_VERSION = "v1"

# Event type filters an endpoint may name: a type, every type of a family, or everything.
WILDCARD = "*"
FAMILIES = tuple(sorted({name.split(".", 1)[0] for name in CATALOGUE}))
EVENT_TYPE_FILTERS = (WILDCARD, *(f"{family}.*" for family in FAMILIES), *sorted(CATALOGUE))

# Retries: the n-th retry waits about RETRY_BASE * RETRY_FACTOR**(n-1), at most RETRY_CAP,
# give or take RETRY_JITTER, while the message is younger than RETRY_WINDOW (counted from its
# first attempt): 5 s, 15 s, 45 s, 2 min, 7 min, 20 min, 1 h, 3 h, 9 h, then every 12 h.
RETRY_BASE = dt.timedelta(seconds=5)
RETRY_FACTOR = 3
RETRY_CAP = dt.timedelta(hours=12)
RETRY_JITTER = 0.2
RETRY_WINDOW = dt.timedelta(days=3)


def matches(filters: list[str] | tuple[str, ...], event_type: str) -> bool:
    """Whether an endpoint subscribed to ``filters`` receives ``event_type``."""
    family = event_type.split(".", 1)[0]
    return any(f in (WILDCARD, event_type, f"{family}.*") for f in filters)


def matching_types(filters: list[str] | tuple[str, ...]) -> list[str]:
    """The catalogue types that ``filters`` select."""
    return [name for name in CATALOGUE if matches(filters, name)]


def normalise_filters(filters: list[str] | tuple[str, ...]) -> list[str]:
    """The filters without repeats, in the order given. Raises ValueError on an unknown one."""
    unknown = [f for f in filters if f not in EVENT_TYPE_FILTERS]
    if unknown:
        raise ValueError(unknown)
    return list(dict.fromkeys(filters))


def new_secret() -> str:
    """A new signing secret: ``whsec_`` and the base64 of random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret: the bytes its base64 part encodes."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, *, event_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature, ``v1,<base64 HMAC-SHA256>`` of
    ``{event_id}.{timestamp}.{body}`` keyed with the secret's bytes."""
    message = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), message, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_header(secrets_: list[str], *, event_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated (the new
    secret's first during a rotation)."""
    return " ".join(sign(s, event_id=event_id, timestamp=timestamp, body=body) for s in secrets_)


def retry_delay(retry: int, jitter: float) -> dt.timedelta:
    """How long before the ``retry``-th retry (1 for the first), for ``jitter`` in [0, 1)."""
    if retry < 1:
        raise ValueError("retries count from 1")
    exponent = min(retry - 1, 32)  # the cap is reached long before; keeps the float finite
    seconds = min(RETRY_BASE.total_seconds() * RETRY_FACTOR**exponent, RETRY_CAP.total_seconds())
    factor = 1 + RETRY_JITTER * (2 * jitter - 1)
    return dt.timedelta(seconds=math.ceil(seconds * factor))


def next_attempt_at(
    *, first_attempt_at: dt.datetime, attempts: int, now: dt.datetime, jitter: float
) -> dt.datetime | None:
    """When to try a failing message again after ``attempts`` attempts, or None when the
    retry window (`RETRY_WINDOW` from its first attempt) is over: the message has failed."""
    moment = now + retry_delay(attempts, jitter)
    return moment if moment <= first_attempt_at + RETRY_WINDOW else None


def should_disable(
    *, failing_since: dt.datetime | None, gave_up_first_attempt: dt.datetime
) -> bool:
    """The disable rule: an endpoint is disabled when a message exhausts its retries (about 3
    days of attempts) and no delivery to the endpoint has succeeded since that message's first
    attempt."""
    return failing_since is not None and failing_since <= gave_up_first_attempt


# --- which addresses a webhook may reach -----------------------------------------------------


def address_refusal(address: str) -> str | None:
    """Why a webhook must not connect to ``address`` (an IP address), or None when it may:
    private, loopback, link-local, multicast, reserved, unspecified and other non-public
    addresses are refused, IPv4 addresses inside IPv6 (mapped, 6to4, Teredo) included."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None:
            refusal = address_refusal(str(inner))
            if refusal is not None:
                return refusal
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    )
    for name, hit in checks:
        if hit:
            return f"{name} address"
    if not ip.is_global:
        return "non-public address"
    return None


# --- lifecycle triggers ----------------------------------------------------------------------

# The lifecycle settings' windows, in days: (least, most).
EXPIRING_SOON_DAYS = (1, 365)
INACTIVE_DAYS = (1, 3650)
# A first order opens a care window this long from when it was placed.
CARE_WINDOW = dt.timedelta(hours=72)
# Order ids are made (time-ordered) before their transaction commits: first-order passes read
# again the orders made this long before the newest, so one that committed late is not missed
# (the sent records keep the re-read from sending twice).
ORDER_OVERLAP = dt.timedelta(minutes=2)
# A birthday pass looks back at most this far: any local day that began earlier is over
# (days last at most 25 hours, at a change of daylight saving time).
BIRTHDAY_LOOKBACK = dt.timedelta(hours=26)
_ONE_DAY = dt.timedelta(days=1)


def care_window_ends_at(placed_at: dt.datetime) -> dt.datetime:
    """When the care window of a first order placed at ``placed_at`` closes."""
    return placed_at + CARE_WINDOW


def rewound_id(record_id: str, by: dt.timedelta) -> str:
    """The smallest id of ``record_id``'s kind made ``by`` before it: ids end in a ULID,
    whose first 48 bits are the millisecond it was made (`loyalty.db.new_id`). An id that
    does not is returned as it is."""
    prefix, _, value = record_id.rpartition("_")
    try:
        made = ULID.from_str(value).milliseconds
    except ValueError:
        return record_id
    milliseconds = max(made - int(by / dt.timedelta(milliseconds=1)), 0)
    floor = ULID.from_bytes(milliseconds.to_bytes(6, "big") + bytes(10))
    return f"{prefix}_{floor}" if prefix else str(floor)


@dataclass(frozen=True)
class DayBegun:
    """A local date that began at ``start`` (UTC) in each of ``zones``."""

    start: dt.datetime
    day: dt.date
    zones: tuple[str, ...]


def day_start(day: dt.date, zone: str) -> dt.datetime:
    """The first moment of ``day`` in ``zone``, in UTC: its midnight, or the moment the
    clocks jumped to when that midnight does not exist (a daylight saving change)."""
    # fold=0 reads a skipped midnight with the offset before the jump: the jump's instant.
    return dt.datetime.combine(day, dt.time(), tzinfo=ZoneInfo(zone)).astimezone(dt.UTC)


def day_over(day: dt.date, zone: str, now: dt.datetime) -> bool:
    """Whether ``day`` has ended in ``zone`` at ``now``."""
    return day_start(day + _ONE_DAY, zone) <= now


def days_begun(zones: Iterable[str], after: dt.datetime, until: dt.datetime) -> list[DayBegun]:
    """The local days that began in (``after``, ``until``] in ``zones``: one `DayBegun` per
    moment and date, with the zones where that date began then, in the order they began."""
    begun: dict[tuple[dt.datetime, dt.date], list[str]] = {}
    for zone in zones:
        day = after.astimezone(ZoneInfo(zone)).date() + _ONE_DAY
        while (start := day_start(day, zone)) <= until:
            if start > after:
                begun.setdefault((start, day), []).append(zone)
            day += _ONE_DAY
    return [
        DayBegun(start, day, tuple(sorted(names))) for (start, day), names in sorted(begun.items())
    ]


def birthdays_on(day: dt.date, *, since_year: int) -> list[dt.date]:
    """The dates of birth from ``since_year`` on whose birthday is ``day``: the same month and
    day in every year up to ``day``'s, and on 28 February of a common year the 29 Februaries
    of leap years too."""
    dates = [
        dt.date(year, day.month, day.day)
        for year in range(since_year, day.year + 1)
        if (day.month, day.day) != (2, 29) or calendar.isleap(year)
    ]
    if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
        dates += [
            dt.date(year, 2, 29) for year in range(since_year, day.year) if calendar.isleap(year)
        ]
    return sorted(dates)
