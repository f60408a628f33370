"""Request schemas are built once per class and shared by every request and thread
(`loyalty.jsonbody.StrictParser`): requests validated at the same moment each get their own
answer, with their own errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from loyalty.members import service as members_service
from tests.support import race

pytestmark = pytest.mark.concurrency
WORKERS = 8


def test_requests_validated_at_once_get_their_own_errors(
    app: Flask,
    new_session: Callable[[], Session],
    make_headers: Callable[..., dict[str, str]],
) -> None:
    member, _ = members_service.enroll_member(new_session(), external_id="shared")
    headers = make_headers("points:accrue")

    def body(index: int) -> tuple[dict[str, Any], str | None]:
        """An order, and the pointer of what is wrong with it (None: nothing)."""
        order = {"order_id": f"o-{index}", "member_id": member.id, "total": 100 + index}
        order["currency"] = "USD"
        kind = index % 4
        if kind == 1:
            return {**order, "total": f"many-{index}"}, "#/total"
        if kind == 2:
            return {**order, "currency": f"X{index}"}, "#/currency"
        if kind == 3:
            return {**order, f"extra_{index}": index}, "#"
        return order, None

    def post(index: int, _session: Session) -> tuple[int, Any, str | None, int]:
        sent, wrong = body(index)
        for _attempt in range(5):  # several rounds, so that requests overlap
            response = app.test_client().post("/v1/orders", json=sent, headers=headers)
            if wrong is not None:
                answer = response.get_json()
                assert response.status_code == 422, answer
                pointers = [error["pointer"] for error in answer["errors"]]
                if pointers != [wrong]:
                    return response.status_code, response.json, wrong, index
        return response.status_code, response.json, wrong, index

    results = race(app, WORKERS, post)
    assert not [r for r in results if isinstance(r, Exception)], results
    for status, answer, wrong, index in results:  # type: ignore[misc]
        if wrong is None:
            assert status in (200, 201), answer
            assert answer["order_id"] == f"o-{index}"
            continue
        assert status == 422, answer
        assert [error["pointer"] for error in answer["errors"]] == [wrong], answer
        if wrong == "#":
            assert "1 unknown field" in answer["errors"][0]["detail"]
