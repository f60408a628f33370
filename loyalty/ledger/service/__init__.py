"""The points core: accrue, refund, redeem, hold, capture, release, adjust, and the due work
(activation, expiry, hold timeouts).

Every state-changing function is one unit of work that first locks the member's wallet row
(``SELECT ... FOR UPDATE``; SQLite serialises writers instead), then settles what is due on
that wallet, then applies its change. Locks are taken in one order (wallet, then its lots and
holds), so operations on one member queue rather than deadlock. Only this package writes the
ledger tables.

One module per topic; callers use the names re-exported here (``from loyalty.ledger import
service``, then ``service.accrue_order``):

- `settings`: the programme's core settings and the inactivity sweep;
- `reads`: balances, entries, orders, holds, and reads for other areas;
- `orders`: accrual and refunds;
- `spending`: redemptions and holds;
- `postings`: what other areas post inside their unit of work, and adjustments;
- `due`: settling what is due (activation, expiry, hold timeouts), by wallet or in batches;
- `_giveback` and `_core` (private): points going back to their lots and debt repayment; wallet
  locks, entries, lots and allocations.
"""

from __future__ import annotations

from loyalty.ledger.service._core import Balance, Settings, entry_public_id
from loyalty.ledger.service.due import (
    due_wallet_count,
    settle_due_batch,
    settle_wallet,
    settle_wallets,
)
from loyalty.ledger.service.orders import (
    FUTURE_TOLERANCE,
    MAX_ORDER_POINTS,
    Replayable,
    accrue_order,
    check_age,
    recount_orders,
    refund_order,
)
from loyalty.ledger.service.postings import (
    PointsMove,
    adjust,
    credit_bonus,
    lock_member,
    lock_members,
    on_member_enrolled,
    return_redemption,
    reverse_bonus,
    spend_points,
)
from loyalty.ledger.service.reads import (
    EXPIRING_WINDOW,
    Activity,
    BalanceReport,
    Expiring,
    ExpiringPoints,
    LastActivity,
    OrderRef,
    OrderView,
    RecordedOrder,
    Walk,
    activity,
    first_order_reaching,
    first_orders_after,
    get_balance,
    get_hold,
    get_order,
    has_order_reaching,
    last_activities,
    latest_order_pk,
    list_entries,
    list_member_orders,
    order_measure,
    order_points_placed,
    points_expiring,
    points_placed_lateral,
    points_summaries,
)
from loyalty.ledger.service.settings import (
    INACTIVITY_DAYS_PER_MONTH,
    SETTINGS_FIELDS,
    SWEEP_BATCH,
    get_settings,
    sweep_due_wallets,
    update_settings,
)
from loyalty.ledger.service.spending import (
    HoldResult,
    capture_hold,
    place_hold,
    redeem,
    release_hold,
)

__all__ = [
    "Activity",
    "Balance",
    "BalanceReport",
    "EXPIRING_WINDOW",
    "Expiring",
    "ExpiringPoints",
    "FUTURE_TOLERANCE",
    "HoldResult",
    "INACTIVITY_DAYS_PER_MONTH",
    "LastActivity",
    "MAX_ORDER_POINTS",
    "OrderRef",
    "OrderView",
    "PointsMove",
    "RecordedOrder",
    "Replayable",
    "SETTINGS_FIELDS",
    "SWEEP_BATCH",
    "Settings",
    "Walk",
    "accrue_order",
    "activity",
    "adjust",
    "capture_hold",
    "check_age",
    "credit_bonus",
    "due_wallet_count",
    "entry_public_id",
    "first_order_reaching",
    "first_orders_after",
    "get_balance",
    "get_hold",
    "get_order",
    "get_settings",
    "has_order_reaching",
    "last_activities",
    "latest_order_pk",
    "list_entries",
    "list_member_orders",
    "lock_member",
    "lock_members",
    "on_member_enrolled",
    "order_measure",
    "order_points_placed",
    "points_placed_lateral",
    "place_hold",
    "points_expiring",
    "points_summaries",
    "redeem",
    "recount_orders",
    "refund_order",
    "release_hold",
    "return_redemption",
    "reverse_bonus",
    "settle_due_batch",
    "settle_wallet",
    "settle_wallets",
    "spend_points",
    "sweep_due_wallets",
    "update_settings",
]
