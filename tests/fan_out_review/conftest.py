from tests.analytics.conftest import now  # noqa: F401
from tests.support import _invariants_hold, clock, new_session  # noqa: F401
