"""A fake Stripe on loopback for the billing tests: localstripe (a stateful fake Stripe
server, run as a process of its own) answers what it covers (customers, coupons,
PaymentIntents, refunds, events), and this small pytest-httpserver server in front of it
answers only what localstripe lacks, Checkout Sessions and promotion codes, passing every other
call through. The SDK is pointed at the front server (``LOYALTY_STRIPE_API_BASE``)."""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import sys
import time
from typing import Any

import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class LocalStripe:
    """localstripe on a free loopback port, started from scratch."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "localstripe", "--port", str(self.port), "--from-scratch"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(
                    f"{self.url}/v1/customers",
                    auth=("sk_test_ping", ""),
                    timeout=1,
                )
                return
            except requests.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("localstripe did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (``a[b][0][c]=v``) as nested dicts (lists as index dicts)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return result


class FakeStripe:
    """The front server. ``calls`` lists (method, path) of every call; ``failures`` makes the
    next calls to a path prefix answer 500 (an outage)."""

    def __init__(self, localstripe: LocalStripe) -> None:
        self.localstripe = localstripe
        self.server = HTTPServer(host="127.0.0.1", port=free_port())
        self.server.expect_request(re.compile(r"^/.*$")).respond_with_handler(self.handle)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.port}"
        self.sessions: dict[str, dict[str, Any]] = {}
        self.promotion_codes: dict[str, dict[str, Any]] = {}
        self.idempotent: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.failures: dict[str, int] = {}

    def stop(self) -> None:
        self.server.clear()
        if self.server.is_running():
            self.server.stop()

    def reset(self) -> None:
        self.calls.clear()
        self.failures.clear()

    def fail(self, prefix: str, times: int) -> None:
        self.failures[prefix] = times

    def handle(self, request: Request) -> Response:
        self.calls.append((request.method, request.path))
        for prefix, left in self.failures.items():
            if left > 0 and request.path.startswith(prefix):
                self.failures[prefix] = left - 1
                return _json({"error": {"type": "api_error", "message": "outage"}}, 500)
        if not request.headers.get("Authorization", "").startswith("Bearer sk_test_"):
            return _json({"error": {"type": "invalid_request_error", "code": "no_key"}}, 401)
        request.get_data(cache=True)  # kept for passing on; the form is parsed from it
        data = unflatten(list(request.form.items(multi=True)))
        key = request.headers.get("Idempotency-Key")
        if key and key in self.idempotent:
            return _json(self.idempotent[key])
        if request.path == "/v1/checkout/sessions" and request.method == "POST":
            answer = self._checkout(data)
        elif request.path == "/v1/promotion_codes" and request.method == "POST":
            answer = self._promotion_code(data)
            if answer is None:
                return _json({"error": {"type": "invalid_request_error"}}, 400)
        elif request.path.startswith("/v1/promotion_codes/"):
            code = self.promotion_codes.get(request.path.rsplit("/", 1)[1])
            if code is None:
                return _json({"error": {"type": "invalid_request_error"}}, 404)
            if request.method == "POST":
                if "active" in data:
                    code["active"] = data["active"] == "true"
            answer = code
        else:
            return self._pass_on(request)
        if key:
            self.idempotent[key] = answer
        return _json(answer)

    def _checkout(self, data: dict[str, Any]) -> dict[str, Any]:
        session_id = "cs_test_" + secrets.token_hex(12)
        session = {
            "id": session_id,
            "object": "checkout.session",
            "url": f"https://checkout.stripe.test/c/pay/{session_id}",
            "mode": data.get("mode"),
            "customer": data.get("customer"),
            "client_reference_id": data.get("client_reference_id"),
            "metadata": data.get("metadata", {}),
            "line_items": data.get("line_items", {}),
            "subscription_data": data.get("subscription_data", {}),
            "success_url": data.get("success_url"),
            "cancel_url": data.get("cancel_url"),
            "expires_at": int(time.time()) + 86400,
            "status": "open",
        }
        self.sessions[session_id] = session
        return session

    def _promotion_code(self, data: dict[str, Any]) -> dict[str, Any] | None:
        promotion = data.get("promotion", {})
        coupon = requests.get(
            f"{self.localstripe.url}/v1/coupons/{promotion.get('coupon')}",
            auth=("sk_test_fake", ""),
            timeout=10,
        )
        if promotion.get("type") != "coupon" or coupon.status_code != 200:
            return None
        code_id = "promo_" + secrets.token_hex(10)
        code = {
            "id": code_id,
            "object": "promotion_code",
            "code": data.get("code"),
            "active": True,
            "promotion": {"type": "coupon", "coupon": coupon.json()},
            "customer": data.get("customer"),
            "max_redemptions": int(data["max_redemptions"]) if "max_redemptions" in data else None,
            "expires_at": int(data["expires_at"]) if "expires_at" in data else None,
            "metadata": data.get("metadata", {}),
        }
        self.promotion_codes[code_id] = code
        return code

    def _pass_on(self, request: Request) -> Response:
        answer = requests.request(
            request.method,
            self.localstripe.url + request.full_path.rstrip("?"),
            data=request.get_data(cache=True),
            headers={
                name: value
                for name, value in request.headers.items()
                if name in ("Authorization", "Content-Type", "Idempotency-Key")
            },
            timeout=30,
        )
        return Response(answer.content, answer.status_code, content_type="application/json")


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status, content_type="application/json")
