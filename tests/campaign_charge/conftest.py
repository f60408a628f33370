"""Probes of the campaign charge at the commit: the ledger's member factory, clock and the
invariants check."""

from __future__ import annotations

from tests.ledger.conftest import member  # noqa: F401
from tests.support import _invariants_hold, clock  # noqa: F401
