"""Earning test helpers: the test clock, the ledger's member factory and invariants check."""

from __future__ import annotations

from tests.ledger.conftest import member
from tests.support import _invariants_hold, clock
