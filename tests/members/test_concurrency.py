"""Concurrent enrolments of one customer, on real PostgreSQL connections."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask
from sqlalchemy import func, select

from loyalty.db import get_database
from loyalty.members import service
from loyalty.members.models import Member

pytestmark = pytest.mark.concurrency


def test_concurrent_enrolments_of_one_external_id_make_one_member(app: Flask) -> None:
    workers = 8
    barrier = threading.Barrier(workers)

    def enroll(_: int) -> tuple[str, bool]:
        with app.app_context():
            session = get_database(app).sessionmaker()
            try:
                barrier.wait()
                member, created = service.enroll_member(session, external_id="race-1")
                return member.id, created
            finally:
                session.close()

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(enroll, range(workers)))

    assert len({member_id for member_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with app.app_context():
        session = get_database(app).sessionmaker()
        count = session.scalar(select(func.count()).select_from(Member))
        session.close()
    assert count == 1


def test_concurrent_enrolments_over_http(app: Flask, make_headers: object) -> None:
    headers = make_headers("members:write")  # type: ignore[operator]
    workers = 8
    barrier = threading.Barrier(workers)

    def post(_: int) -> tuple[int, str]:
        client = app.test_client()
        barrier.wait()
        response = client.post("/v1/members", json={"external_id": "race-2"}, headers=headers)
        assert response.json is not None
        return response.status_code, response.json["id"]

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(post, range(workers)))
    assert sorted(status for status, _ in results) == [200] * (workers - 1) + [201]
    assert len({member_id for _, member_id in results}) == 1
