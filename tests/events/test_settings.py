"""``WEBHOOKS_ALLOW_PRIVATE``: off by default, from ``LOYALTY_WEBHOOKS_ALLOW_PRIVATE``, checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from loyalty import create_app
from loyalty.config import ConfigError


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LOYALTY_WEBHOOKS_ALLOW_PRIVATE", raising=False)
    monkeypatch.setenv("LOYALTY_INSTANCE_PATH", str(tmp_path))


def test_private_addresses_are_refused_by_default() -> None:
    assert create_app({"TESTING": True}).config["WEBHOOKS_ALLOW_PRIVATE"] is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("True", True), ("1", True), ("yes", True), ("false", False), ("0", False)],
)
def test_the_environment_turns_it_on_or_off(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("LOYALTY_WEBHOOKS_ALLOW_PRIVATE", value)
    assert create_app({"TESTING": True}).config["WEBHOOKS_ALLOW_PRIVATE"] is expected


@pytest.mark.parametrize("value", ["maybe", "2", "[]"])
def test_anything_else_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("LOYALTY_WEBHOOKS_ALLOW_PRIVATE", value)
    with pytest.raises(ConfigError, match="LOYALTY_WEBHOOKS_ALLOW_PRIVATE must be true or false"):
        create_app({"TESTING": True})
