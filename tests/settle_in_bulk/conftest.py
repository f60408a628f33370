"""Review 8 probes: the ledger's fixtures (a frozen clock, members, the invariants after
every test)."""

from tests.ledger.conftest import (
    member,  # noqa: F401
    programme,  # noqa: F401,E402
)
from tests.support import _invariants_hold, clock  # noqa: F401
