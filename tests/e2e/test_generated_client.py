"""Integration through a generated client, as storefronts do it: a Python client is generated
from the committed openapi.yaml with openapi-python-client, and the storefront flow (token,
enroll, order, balance, hold, capture, refund, redeem, ledger, an error) runs through it against
the app served on a real port, on PostgreSQL and on SQLite.

When the generator cannot express something, the spec is what gets fixed, never this test: it
uses only the generated functions and models, the way a storefront would."""

from __future__ import annotations

import datetime as dt
import importlib
import pkgutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from loyalty.auth import service as auth_service
from loyalty.db import get_session

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "openapi.yaml"
PACKAGE = "loyalty_generated_client"
STOREFRONT_SCOPES = ("members:read", "members:write", "points:accrue", "points:redeem")

pytestmark = pytest.mark.concurrency  # the server's threads commit for real


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    """Generate the client from the committed spec (offline, warnings fatal, no formatter
    hooks) and import every module of it, keyed by dotted name below the package."""
    root = tmp_path_factory.mktemp("generated-client")
    config = root / "openapi-python-client.yaml"
    config.write_text("post_hooks: []\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(SPEC),
            "--output-path",
            str(root / PACKAGE),
            "--meta",
            "none",
            "--config",
            str(config),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output

    sys.path.insert(0, str(root))
    try:
        package = importlib.import_module(PACKAGE)
        modules = {"": package}
        broken = {}
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{PACKAGE}."):
            try:
                modules[info.name.removeprefix(f"{PACKAGE}.")] = importlib.import_module(info.name)
            except Exception as error:  # report every module that does not import
                broken[info.name] = repr(error)
        assert broken == {}, "generated modules that do not import"
        yield modules
    finally:
        sys.path.remove(str(root))
        for name in [name for name in sys.modules if name.partition(".")[0] == PACKAGE]:
            del sys.modules[name]


@pytest.fixture
def server(e2e_app: Flask) -> Iterator[str]:
    """The app served on a free local port by a threaded WSGI server; its base URL."""
    httpd = make_server("127.0.0.1", 0, e2e_app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, name="loyalty-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(timeout=30)
        httpd.server_close()


@pytest.fixture
def credentials(e2e_app: Flask) -> tuple[str, str]:
    """A storefront's API client (id and secret), as `loyalty clients create` makes it."""
    with e2e_app.app_context():
        new = auth_service.create_client(get_session(), name="Storefront", scopes=STOREFRONT_SCOPES)
        return new.client.id, new.secret


def test_the_generated_client_is_complete(generated: dict[str, ModuleType]) -> None:
    operations = {name for name in generated if name.startswith("api.") and name.count(".") == 2}
    expected = {
        "api.auth.post_v1_auth_token",
        "api.members.post_v1_members",
        "api.points.post_v1_orders",
        "api.points.get_v1_members_member_id_balance",
        "api.points.post_v1_members_member_id_holds",
        "api.points.post_v1_holds_hold_id_capture",
        "api.points.post_v1_orders_order_id_refunds",
        "api.points.post_v1_members_member_id_redemptions",
        "api.points.get_v1_members_member_id_ledger",
    }
    assert expected <= operations


def test_storefront_flow_through_the_generated_client(
    generated: dict[str, ModuleType], server: str, credentials: tuple[str, str]
) -> None:
    api = {name.rpartition(".")[2]: module for name, module in generated.items()}
    models: Any = generated["models"]
    client_module: Any = generated["client"]
    client_id, client_secret = credentials

    # Token: OAuth 2 client credentials, without authentication.
    with client_module.Client(base_url=server, raise_on_unexpected_status=True) as anonymous:
        token = api["post_v1_auth_token"].sync_detailed(
            client=anonymous,
            body=models.TokenRequest(
                client_id=client_id,
                client_secret=client_secret,
                grant_type=models.TokenRequestGrantType.CLIENT_CREDENTIALS,
            ),
        )
        assert token.status_code == 200, token.content
        assert isinstance(token.parsed, models.Token)
        assert token.parsed.token_type == "Bearer"
        assert token.parsed.expires_in > 0
        assert set(token.parsed.scope.split()) == set(STOREFRONT_SCOPES)
        refused = api["post_v1_auth_token"].sync_detailed(
            client=anonymous,
            body=models.TokenRequest(client_id=client_id, client_secret="not-the-secret"),
        )
        assert refused.status_code == 401
        assert isinstance(refused.parsed, models.OAuthProblem)
        assert refused.parsed.code == "invalid-client"
        assert refused.parsed.error == models.OAuthProblemError.INVALID_CLIENT

    # Every other call sends the token as the generated AuthenticatedClient does.
    with client_module.AuthenticatedClient(
        base_url=server, token=token.parsed.access_token, raise_on_unexpected_status=True
    ) as shop:
        assert shop.prefix == token.parsed.token_type
        _flow(api, models, shop)


def _flow(api: dict[str, Any], models: Any, shop: Any) -> None:
    # Enroll (idempotent on external_id: 201, then 200 with the same member).
    profile = models.MemberCreate(
        external_id="shop-cust-1",
        email="ada@example.com",
        name="Ada Lovelace",
        birthday=dt.date(1990, 12, 10),
        timezone=models.TimeZone.EUROPE_LONDON,
        marketing_consent=True,
    )
    enrolled = api["post_v1_members"].sync_detailed(client=shop, body=profile)
    assert enrolled.status_code == 201, enrolled.content
    member = enrolled.parsed
    assert isinstance(member, models.Member)
    assert member.external_id == "shop-cust-1"
    assert member.email == "ada@example.com"
    assert member.birthday == dt.date(1990, 12, 10)
    assert member.status == models.MemberStatus.ACTIVE
    assert member.tier is None and member.referrer_id is None
    assert (member.points.available, member.points.pending, member.points.held) == (0, 0, 0)
    again = api["post_v1_members"].sync_detailed(client=shop, body=profile)
    assert again.status_code == 200
    assert again.parsed.id == member.id

    # An order placed 20 days ago: past the 14-day return window, so its points are active.
    # 12345 USD cents earn 123 points (1 per dollar, floor).
    placed_at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=20)
    order = api["post_v1_orders"].sync_detailed(
        client=shop,
        body=models.OrderCreate(
            order_id="web-1001",
            member_id=member.id,
            total=12345,
            currency=models.Currency.USD,
            items=[models.OrderItem(sku="TEA-1", category="tea", quantity=3, unit_price=4115)],
            placed_at=placed_at,
        ),
    )
    assert order.status_code == 201, order.content
    assert isinstance(order.parsed, models.OrderResult)
    assert order.parsed.order_id == "web-1001" and order.parsed.member_id == member.id
    assert order.parsed.points == 123
    assert order.parsed.status == models.OrderResultStatus.ACTIVE
    assert order.parsed.activates_at == placed_at + dt.timedelta(days=14)
    assert _balance(order.parsed.balance) == (123, 0, 0)

    # Balance.
    report = api["get_v1_members_member_id_balance"].sync_detailed(member.id, client=shop)
    assert report.status_code == 200, report.content
    assert isinstance(report.parsed, models.BalanceReport)
    assert _balance(report.parsed) == (123, 0, 0)
    assert report.parsed.lifetime_earned == 123
    assert report.parsed.expiring == []  # 36 months away

    # Hold 50 at checkout, then capture 30 of them: the other 20 are available again at once.
    hold = api["post_v1_members_member_id_holds"].sync_detailed(
        member.id, client=shop, body=models.HoldCreate(points=50, reference="cart-77")
    )
    assert hold.status_code == 201, hold.content
    assert isinstance(hold.parsed, models.HoldResult)
    assert hold.parsed.status == models.HoldResultStatus.HELD
    assert hold.parsed.points == 50 and hold.parsed.redemption_id is None
    assert hold.parsed.expires_at > dt.datetime.now(dt.UTC)
    assert _balance(hold.parsed.balance) == (73, 0, 50)

    captured = api["post_v1_holds_hold_id_capture"].sync_detailed(
        hold.parsed.id, client=shop, body=models.Capture(points=30)
    )
    assert captured.status_code == 200, captured.content
    assert isinstance(captured.parsed, models.HoldResult)
    assert captured.parsed.id == hold.parsed.id
    assert captured.parsed.status == models.HoldResultStatus.CAPTURED
    assert captured.parsed.points == 30
    assert isinstance(captured.parsed.redemption_id, str)
    assert _balance(captured.parsed.balance) == (93, 0, 0)

    # Refund 23.45 of the 123.45 order: 123 * 2345 / 12345 = 23.4 -> 23 points reversed.
    refund = api["post_v1_orders_order_id_refunds"].sync_detailed(
        "web-1001", client=shop, body=models.RefundCreate(refund_id="web-1001-r1", amount=2345)
    )
    assert refund.status_code == 201, refund.content
    assert isinstance(refund.parsed, models.RefundResult)
    assert refund.parsed.refund_id == "web-1001-r1" and refund.parsed.order_id == "web-1001"
    assert (refund.parsed.points_reversed, refund.parsed.shortfall) == (23, 0)
    assert _balance(refund.parsed.balance) == (70, 0, 0)

    # Redeem 20, with an Idempotency-Key: the retry gets the stored response, no second effect.
    redemption = models.RedemptionCreate(points=20, reference="voucher-5", reason="5 off")
    redeemed = api["post_v1_members_member_id_redemptions"].sync_detailed(
        member.id, client=shop, body=redemption, idempotency_key="redeem-web-1001"
    )
    assert redeemed.status_code == 201, redeemed.content
    assert isinstance(redeemed.parsed, models.PointsMove)
    assert redeemed.parsed.points == 20
    assert _balance(redeemed.parsed.balance) == (50, 0, 0)
    retried = api["post_v1_members_member_id_redemptions"].sync_detailed(
        member.id, client=shop, body=redemption, idempotency_key="redeem-web-1001"
    )
    assert retried.status_code == 201
    assert retried.headers.get("Idempotent-Replayed") == "true"
    assert retried.parsed == redeemed.parsed

    # Redeeming more than is available: 409 insufficient-points, a problem carrying the
    # available balance, parsed by the generated client.
    refused = api["post_v1_members_member_id_redemptions"].sync_detailed(
        member.id, client=shop, body=models.RedemptionCreate(points=1000)
    )
    assert refused.status_code == 409
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    problem = refused.parsed
    assert isinstance(problem, models.Problem)
    assert problem.code == "insufficient-points"
    assert problem.type_.endswith("/insufficient-points")
    assert problem.status == 409
    assert problem.instance == f"/v1/members/{member.id}/redemptions"
    assert (problem["available"], problem["requested"]) == (50, 1000)

    after = api["get_v1_members_member_id_balance"].sync(member.id, client=shop)
    assert isinstance(after, models.BalanceReport)
    assert (_balance(after), after.lifetime_earned) == ((50, 0, 0), 100)

    # The ledger, newest first, two pages of at most 3 entries.
    first = api["get_v1_members_member_id_ledger"].sync_detailed(member.id, client=shop, limit=3)
    assert first.status_code == 200, first.content
    assert isinstance(first.parsed, models.EntryPage)
    assert isinstance(first.parsed.next_cursor, str)
    second = api["get_v1_members_member_id_ledger"].sync(
        member.id, client=shop, limit=3, cursor=first.parsed.next_cursor
    )
    assert isinstance(second, models.EntryPage)
    assert second.next_cursor is None
    entries = [*first.parsed.items, *second.items]
    assert all(isinstance(entry, models.Entry) for entry in entries)
    assert [(entry.kind, entry.points) for entry in entries] == [
        ("redemption", -20),
        ("reversal", -23),
        ("capture", -30),
        ("hold", -50),
        ("accrual", 123),
    ]
    assert [_balance(entry.balance_after) for entry in entries] == [
        (50, 0, 0),
        (70, 0, 0),
        (93, 0, 0),
        (73, 0, 50),
        (123, 0, 0),
    ]
    assert [(entry.reference.type_, entry.reference.id) for entry in entries] == [
        ("redemption", redeemed.parsed.id),
        ("refund", "web-1001-r1"),
        ("hold", hold.parsed.id),
        ("hold", hold.parsed.id),
        ("order", "web-1001"),
    ]
    assert all(isinstance(entry.id, str) for entry in entries)
    assert len({entry.id for entry in entries}) == 5
    assert [entry.external_reference for entry in entries] == [
        "voucher-5",
        None,
        "cart-77",
        "cart-77",
        None,
    ]
    assert (entries[0].reason, entries[1].reason) == ("5 off", "Refund of order web-1001")
    assert all(entry.created_at.tzinfo is not None for entry in entries)


def _balance(value: Any) -> tuple[int, int, int]:
    """A generated balance model as (available, pending, held)."""
    return value.available, value.pending, value.held
