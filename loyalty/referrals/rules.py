"""Pure referral rules: abuse decisions at attribution, caps at qualification, the shareable
link and how a referee is shown to the referrer. No database, no Flask."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STATUSES = ("pending", "qualified", "rejected", "held", "clawed_back")
# Why a referral was rejected or held at attribution.
ABUSE_REASONS = (
    "self_referral",
    "same_email",
    "same_payment_card",
    "same_device",
    "loop",
    "velocity",
)
# Why the referrer got nothing for a qualified referral.
REFERRER_OUTCOMES = ("rewarded", "monthly_cap", "total_cap", "referrer_inactive", "no_reward")
# Storefront metadata keys that identify a payer or a device: equal values on the referrer and
# the referee mean one person behind both accounts.
FINGERPRINTS = (("payment_card_hash", "same_payment_card"), ("device_id", "same_device"))
CODE_PLACEHOLDER = "{code}"
VELOCITY_WINDOW = dt.timedelta(hours=24)


@dataclass(frozen=True)
class Party:
    """What the abuse checks look at on either side of a referral."""

    member_id: str
    email: str | None
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class Decision:
    status: str  # pending, rejected or held
    reason: str | None = None


def normalise_email(email: str | None) -> str | None:
    """Lower case, without a ``+tag`` in the local part: ``Ann+promo@x.com`` is ann@x.com."""
    if not email or "@" not in email:
        return email.strip().lower() if email else None
    local, _, domain = email.strip().lower().rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def attribution(
    referrer: Party,
    referee: Party,
    *,
    loop: bool,
    recent: int,
    velocity_limit: int | None,
) -> Decision:
    """Decide a new referral: rejected for a self-referral (the same member, the same email,
    the same payment card or device) or a loop; held for review when the referrer already
    had ``velocity_limit`` referrals attributed in the last 24 hours (``recent``); else
    pending."""
    if referrer.member_id == referee.member_id:
        return Decision("rejected", "self_referral")
    email = normalise_email(referee.email)
    if email and email == normalise_email(referrer.email):
        return Decision("rejected", "same_email")
    for key, reason in FINGERPRINTS:
        value = referee.metadata.get(key)
        if value not in (None, "") and value == referrer.metadata.get(key):
            return Decision("rejected", reason)
    if loop:
        return Decision("rejected", "loop")
    if velocity_limit is not None and recent >= velocity_limit:
        return Decision("held", "velocity")
    return Decision("pending")


def referrer_outcome(
    *,
    monthly_cap: int | None,
    total_cap: int | None,
    rewarded_this_month: int,
    rewarded_total: int,
) -> str:
    """Whether the referrer is rewarded for one more qualified referral, or which cap stops
    it (the total cap is checked first: it never resets)."""
    if total_cap is not None and rewarded_total >= total_cap:
        return "total_cap"
    if monthly_cap is not None and rewarded_this_month >= monthly_cap:
        return "monthly_cap"
    return "rewarded"


def month_start(now: dt.datetime) -> dt.datetime:
    """The start of ``now``'s calendar month in UTC: monthly caps reset then."""
    utc = now.astimezone(dt.UTC)
    return dt.datetime(utc.year, utc.month, 1, tzinfo=dt.UTC)


def qualifies(net_total: int, currency: str, minimum: int, minimum_currency: str | None) -> bool:
    """Whether an order of ``net_total`` (after refunds, minor units) in ``currency`` is big
    enough; a wholly refunded order never is."""
    if net_total <= 0:
        return False
    if minimum_currency is not None and currency != minimum_currency:
        return False
    return net_total >= minimum


def link(template: str | None, code: str) -> str | None:
    """The member's shareable link: ``template`` with ``{code}`` replaced; None without one."""
    if not template:
        return None
    return template.replace(CODE_PLACEHOLDER, code)


def link_template_problem(template: str) -> str | None:
    """Why a link template is unacceptable, or None."""
    if CODE_PLACEHOLDER not in template:
        return "Must contain {code}, where the member's referral code goes."
    if not template.startswith(("https://", "http://")):
        return "Must be an http(s) URL."
    return None


def display_name(name: str | None, email: str | None) -> str:
    """How a referee is shown to the referrer: the first name, else a masked email
    (``j***@example.com``), else ``a friend``."""
    if name and name.strip():
        return name.strip().split()[0]
    if email and "@" in email:
        local, _, domain = email.rpartition("@")
        return f"{local[:1]}***@{domain}"
    return "a friend"
