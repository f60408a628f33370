"""Scopes (what an API client may do) and channels (whose orders it reports). Pure logic."""

from __future__ import annotations

from collections.abc import Iterable

from loyalty.auth.errors import UnknownScopeError

# Every programme starts with this channel; clients join it unless told otherwise.
DEFAULT_CHANNEL = "chn_default"

SCOPES: tuple[str, ...] = (
    "members:read",
    "members:write",
    "points:accrue",
    "points:redeem",
    "points:adjust",
    "program:read",
    "program:write",
    "analytics:read",
    "webhooks:manage",
)


def parse_scopes(scopes: str | Iterable[str]) -> list[str]:
    """Normalise scopes given as a space-separated string or a list: known, unique, in order.

    Raises `UnknownScopeError` naming every scope that does not exist.
    """
    items = scopes.split() if isinstance(scopes, str) else [s.strip() for s in scopes]
    unknown = [s for s in items if s not in SCOPES]
    if unknown:
        raise UnknownScopeError(unknown, SCOPES)
    wanted = set(items)
    return [s for s in SCOPES if s in wanted]


def scope_string(scopes: Iterable[str]) -> str:
    """OAuth 2's space-separated form."""
    return " ".join(scopes)
