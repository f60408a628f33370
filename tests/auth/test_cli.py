"""``loyalty clients``: create, list, revoke."""

from __future__ import annotations

import json

from click.testing import CliRunner
from flask import Flask

from loyalty.auth.rules import SCOPES
from loyalty.cli import main


def test_create_with_json_prints_exactly_one_object(app: Flask) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(
        main,
        [
            "clients",
            "create",
            "Shop",
            "--scope",
            "members:read",
            "--scope",
            "points:accrue",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert set(created) == {"client_id", "client_secret", "scopes", "channel_id"}
    assert created["channel_id"] == "chn_default"
    assert created["scopes"] == ["members:read", "points:accrue"]

    client = app.test_client()
    token = client.post(
        "/v1/auth/token",
        json={"client_id": created["client_id"], "client_secret": created["client_secret"]},
    )
    assert token.status_code == 200


def test_create_human_output_and_all_scopes(app: Flask) -> None:
    result = app.test_cli_runner().invoke(
        main, args=["clients", "create", "Back office", "--all-scopes"]
    )
    assert result.exit_code == 0, result.output
    assert "client_secret: lsk_" in result.output
    assert " ".join(SCOPES) in result.output


def test_create_needs_a_scope_and_knows_the_scopes(app: Flask) -> None:
    runner: CliRunner = app.test_cli_runner()
    assert runner.invoke(main, args=["clients", "create", "Shop"]).exit_code == 2
    result = runner.invoke(main, args=["clients", "create", "Shop", "--scope", "root"])
    assert result.exit_code == 2
    assert "members:read" in result.output


def test_list_and_revoke(app: Flask) -> None:
    runner = app.test_cli_runner()
    created = json.loads(
        runner.invoke(
            main, args=["clients", "create", "Shop", "--scope", "members:read", "--json"]
        ).output
    )
    listed = json.loads(runner.invoke(main, args=["clients", "list", "--json"]).output)
    assert [row["client_id"] for row in listed] == [created["client_id"]]
    assert listed[0]["revoked_at"] is None

    result = runner.invoke(main, args=["clients", "revoke", created["client_id"]])
    assert result.exit_code == 0 and "Revoked" in result.output
    listed = json.loads(runner.invoke(main, args=["clients", "list", "--json"]).output)
    assert listed[0]["revoked_at"] is not None
    assert "revoked" in runner.invoke(main, args=["clients", "list"]).output

    result = runner.invoke(main, args=["clients", "revoke", "cli_missing"])
    assert result.exit_code == 1
    assert "No API client" in result.output
