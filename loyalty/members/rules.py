"""Member rules with no database: statuses, referral codes, time zones, profile limits, the
names of lifecycle stages."""

from __future__ import annotations

import datetime as dt
import secrets
from functools import cache
from importlib import resources

STATUSES = ("active", "suspended", "closed")

# Crockford-style alphabet without look-alikes (0/O, 1/I/L, U), so codes survive being read out.
REFERRAL_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
REFERRAL_CODE_LENGTH = 8

EXTERNAL_ID_MAX = 128
NAME_MAX = 200
EMAIL_MAX = 254
METADATA_MAX_KEYS = 50
METADATA_MAX_BYTES = 4096
OLDEST_BIRTHDAY = dt.date(1900, 1, 1)


def new_referral_code() -> str:
    """A random referral code such as ``K7QM2XWP`` (30^8, about 6.6e11 possibilities)."""
    return "".join(secrets.choice(REFERRAL_ALPHABET) for _ in range(REFERRAL_CODE_LENGTH))


def normalise_referral_code(code: str) -> str:
    """Codes are matched without regard to case, spaces or dashes."""
    return code.strip().upper().replace("-", "").replace(" ", "")


def is_referral_code(code: str) -> bool:
    return len(code) == REFERRAL_CODE_LENGTH and all(c in REFERRAL_ALPHABET for c in code)


@cache
def time_zones() -> frozenset[str]:
    """The IANA time zone names of the tzdata package: the same on every machine (the
    system's own database may add aliases such as ``localtime``), and listed in the API's
    contract."""
    return frozenset(resources.files("tzdata").joinpath("zones").read_text().split())


def is_time_zone(name: str) -> bool:
    return name in time_zones()


# --- lifecycle stages ----------------------------------------------------------------------

# The stages campaigns may target; analytics decides who is in which (its thresholds are the
# managers', see `loyalty.analytics.rules.lifecycle_stage`).
STAGES = ("new", "active", "silent", "churned")
