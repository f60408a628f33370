"""The README's demo tour works as written: run `loyalty demo`, paste its exports, run the
shell blocks against the live server."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SEPARATOR = "-----next-block-----"


def tour_blocks() -> list[str]:
    text = README.read_text()
    tour = text[text.index("<!-- readme-tour") : text.index("<!-- /readme-tour -->")]
    return re.findall(r"```bash\n(.*?)```", tour, flags=re.S)


def example_blocks() -> list[str]:
    """The README's other shell examples (outside the tour) that call the service."""
    text = README.read_text()
    outside = text[: text.index("<!-- readme-tour")] + text[text.index("<!-- /readme-tour -->") :]
    fenced = re.findall(r"^```(\w*)\n(.*?)^```", outside, flags=re.S | re.M)
    return [block for language, block in fenced if language in ("", "bash") and "curl " in block]


def assigned(block: str) -> set[str]:
    return set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", block, flags=re.M))


def test_readme_examples_use_what_the_tour_sets_and_do_not_age() -> None:
    """The examples outside the tour can be pasted after it: the variables they use are set
    by the tour (or the demo's exports) or by the example itself, they call the demo's
    address, and no request carries a fixed date that will one day have passed."""
    examples = example_blocks()
    assert len(examples) >= 4
    tour = tour_blocks()
    known = {"CLIENT_ID", "CLIENT_SECRET"}.union(*(assigned(block) for block in tour))
    for block in tour + examples:
        used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", block))
        assert used <= known | assigned(block), (used - known - assigned(block), block)
        for url in re.findall(r"(?:https?://)?[\w.]+:\d+/\S*", block):
            assert url.startswith("http://127.0.0.1:5000/"), (url, block)
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d", block), block


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[int, dict[str, str], dict[str, str]]]:
    env = {**os.environ, "LOYALTY_INSTANCE_PATH": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    env.pop("LOYALTY_DATABASE_URL", None)
    env.pop("LOYALTY_SECRET_KEY", None)
    prepared = subprocess.run(
        ["loyalty", "demo", "--no-serve"], env=env, capture_output=True, text=True, timeout=120
    )
    assert prepared.returncode == 0, prepared.stderr
    exports = dict(re.findall(r"export (\w+)=(\S+)", prepared.stdout))
    assert set(exports) == {"CLIENT_ID", "CLIENT_SECRET"}

    port = free_port()
    server = subprocess.Popen(
        ["loyalty", "demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield port, exports, env
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_readme_starts_with_the_two_commands() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks[0].strip() == "pip install -e . && loyalty demo"
    assert blocks[1].strip() == 'pip install -e ".[test]" && python -m pytest -n auto'


def run_tour(port: int, exports: dict[str, str]) -> list[Any]:
    """Run the tour's blocks in one shell, as a reader pastes them; one JSON document per
    block that prints one."""
    blocks = [b.replace("127.0.0.1:5000", f"127.0.0.1:{port}") for b in tour_blocks()]
    assert len(blocks) >= 6
    script = "set -euo pipefail\n" + f"\necho {SEPARATOR}\n".join(blocks)
    result = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, **exports},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    outputs = [chunk.strip() for chunk in result.stdout.split(SEPARATOR)]
    assert len(outputs) == len(blocks)
    assert outputs[0] == ""  # the token is kept in $TOKEN
    documents = [json.loads(chunk) for chunk in outputs[1:]]
    for document in documents:
        assert "code" not in document, document
    return documents


def check_tour(documents: list[Any]) -> dict[str, Any]:
    """What the tour shows, on its first run and on every later run against the same demo.
    Returns the ids of what this run created."""
    (
        token_by_form,
        enrolled,
        looked_up,
        updated,
        page,
        order,
        balance,
        refund,
        capture,
        redemption,
        ledger,
        preview,
        tier,
        perks,
        claim,
        used,
        event,
        badges,
        referrals,
    ) = documents
    assert token_by_form["token_type"] == "Bearer"
    assert enrolled["external_id"].startswith("cust-") and enrolled["points"]["pending"] == 0
    assert looked_up["id"] == enrolled["id"]
    assert updated["name"] == "Lin Wei-Schmidt" and updated["marketing_consent"] is False
    assert len(page["items"]) == 2 and page["next_cursor"]
    assert (order["member_id"], order["points"], order["status"]) == (
        enrolled["id"],
        123,
        "pending",
    )
    assert (balance["available"], balance["pending"]) == (0, 123)
    assert (refund["order_id"], refund["points_reversed"]) == (order["order_id"], 50)
    assert refund["balance"] == {"available": 0, "pending": 73, "held": 0}
    assert (capture["status"], capture["points"]) == ("captured", 80)
    assert redemption["points"] == 50
    assert [e["kind"] for e in ledger["items"][:3]] == ["redemption", "capture", "hold"]
    # base 90 (the gift card earns nothing) + shoes x2 +90 + Platinum x1.5 +45 + campaign +90
    assert preview["points"] == 315
    assert [c["kind"] for c in preview["breakdown"]] == ["base", "product", "tier", "campaign"]
    assert preview["items"] == [
        {"sku": "trail-boot", "points": 315},
        {"sku": "gift-25", "points": 0},
    ]
    assert tier["tier"]["code"] == "platinum"
    assert {p["kind"] for p in perks["items"]} == {
        "birthday_gift",
        "free_shipping",
        "early_access",
        "exclusive_discount",
    }
    assert (claim["status"], claim["points"]) == ("issued", 250)
    assert claim["balance"]["available"] == ledger["items"][0]["balance_after"]["available"] - 250
    assert (used["id"], used["status"]) == (claim["id"], "used")
    assert (event["event_id"], event["type"]) == (f"rev-{order['order_id'][2:]}", "review.posted")
    assert event["points"] in (0, 10)  # 10 unless the month's reviews reached the cap of 5
    assert any(b["name"] == "Reviewer" for b in badges["progress"])
    assert badges["earned"]  # the demo gave her some
    assert referrals["link"].endswith(referrals["referral_code"])
    assert referrals["counts"]["invited"] == 2  # Grace and Alan
    return {
        "member": enrolled["id"],
        "external_id": enrolled["external_id"],
        "order": order["order_id"],
        "redemption": redemption["id"],
        "claim": claim["id"],
        "coupon": claim["coupon_code"],
        "event": event["id"],
    }


def test_readme_tour_runs_twice_against_the_same_demo(
    demo: tuple[int, dict[str, str], dict[str, str]],
) -> None:
    """People run the tour again: every run shows the same, with new objects where the tour
    creates them (a member, an order, a redemption, a claim, an event)."""
    port, exports, env = demo
    first = check_tour(run_tour(port, exports))
    second = check_tour(run_tour(port, exports))
    for name, value in first.items():
        assert second[name] != value, name

    verified = subprocess.run(
        ["loyalty", "ledger", "verify"], env=env, capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0, verified.stderr
