"""Scope parsing, without a database."""

from __future__ import annotations

import pytest

from loyalty.auth.errors import UnknownScopeError
from loyalty.auth.rules import SCOPES, parse_scopes, scope_string


def test_scopes_come_back_unique_and_in_canonical_order() -> None:
    assert parse_scopes("points:redeem members:read points:redeem") == [
        "members:read",
        "points:redeem",
    ]
    assert parse_scopes(list(reversed(SCOPES))) == list(SCOPES)


def test_unknown_scopes_are_all_named() -> None:
    with pytest.raises(UnknownScopeError) as caught:
        parse_scopes(["members:read", "admin", "root"])
    assert caught.value.scopes == ["admin", "root"]
    assert caught.value.data == {}
    assert caught.value.detail.startswith("2 unknown scope(s); the scopes are: members:read ")


def test_scope_string_is_space_separated() -> None:
    assert scope_string(["a", "b"]) == "a b"
