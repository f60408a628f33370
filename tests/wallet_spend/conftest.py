"""Probes of the wallets' spend and order count (a review of 2a98305): the invariants are
checked after every probe."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from loyalty.db import get_database
from tests.support import _invariants_hold, clock  # noqa: F401


@pytest.fixture
def db(e2e_app: Flask) -> Iterator[Session]:
    """A session on each backend (the end-to-end app's)."""
    with e2e_app.app_context():
        session = get_database(e2e_app).sessionmaker()
        try:
            yield session
        finally:
            session.close()
