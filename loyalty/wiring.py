"""Who reacts to what, and who answers for whom.

Read this file to follow what happens after a call: the one ordered table of domain-event
subscribers (`SUBSCRIBERS`), the ports through which lower areas ask higher ones
(`plug_ports`), and the due work of ``loyalty jobs run`` (`DUE_WORK`). `install` puts them in
place when the app is created. Subscribers run in the order of the table, inside the
transaction of the call that published the event (see `loyalty.bus`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session

from loyalty import api, bus
from loyalty.analytics import service as analytics
from loyalty.auth import security
from loyalty.billing import service as billing
from loyalty.community import service as community
from loyalty.earning import service as earning
from loyalty.events import delivery as webhooks
from loyalty.events import lifecycle
from loyalty.events import writer as outbox_writer
from loyalty.ledger import ports as ledger_ports
from loyalty.ledger import service as ledger
from loyalty.ledger.events import (
    BonusCredited,
    OrderActivated,
    OrderRecorded,
    OrderRefunded,
)
from loyalty.members import service as members
from loyalty.members.events import MemberEnrolled
from loyalty.referrals import service as referrals
from loyalty.referrals.events import ReferralClawedBack, ReferralQualified
from loyalty.rewards import service as rewards
from loyalty.rewards.events import ClaimChanged
from loyalty.tiers import service as tiers

SUBSCRIBERS: bus.Table = (
    # A member joins: their wallet is opened; a referral is attributed (or refused).
    (MemberEnrolled, ledger.on_member_enrolled),
    (MemberEnrolled, referrals.on_member_enrolled),
    # An order: its outbox row (on PostgreSQL the accrual wrote it already), the tier (an
    # upgrade is in place before badges look), then badges.
    (OrderRecorded, outbox_writer.write_ahead),
    (OrderRecorded, tiers.on_points_earned),
    (OrderRecorded, community.on_order_recorded),
    # Bonus points (badges, referrals, birthday gifts) count toward tiers.
    (BonusCredited, tiers.on_points_earned),
    # An order's points activate: the member's referral may qualify (after commit).
    (OrderActivated, referrals.on_order_activated),
    # A refund: the referral it qualified may be clawed back, then badges follow.
    (OrderRefunded, referrals.on_order_refunded),
    (OrderRefunded, community.on_order_refunded),
    # The referrer's qualified-referral badges.
    (ReferralQualified, community.on_referral_qualified),
    (ReferralClawedBack, community.on_referral_clawed_back),
    # Last, every event: its outbound form goes to the outbox (then signed webhooks).
    (bus.Event, outbox_writer.write),
    # Stripe: a discount claim's promotion code is queued (created and ended by the job).
    (ClaimChanged, billing.on_claim_changed),
)


def plug_ports() -> None:
    """Give the lower areas the answers only higher ones have."""
    api.authenticate.plug(security.authenticate)
    ledger_ports.price_order.plug(earning.price_order)
    ledger_ports.lock_companions.add(tiers.LOCK_COMPANION)
    ledger_ports.lock_companions.add(analytics.LOCK_COMPANION)
    ledger_ports.lock_companions.add(earning.LOCK_COMPANION)
    ledger_ports.accrual_riders.add(outbox_writer.ORDER_RIDER)
    ledger_ports.in_bulk.add(outbox_writer.IN_BULK)
    ledger_ports.in_bulk.add(referrals.IN_BULK)
    members.points_summaries.plug(ledger.points_summaries)
    members.current_tiers.plug(tiers.current_tiers)
    tiers.tier_references.plug(earning.tier_references)
    tiers.tier_references.plug(rewards.tier_references)
    rewards.reward_references.plug(referrals.names_reward)
    earning.member_stage.plug(analytics.stage_of)


# The areas' due work after the wallets are settled, in this order; each returns labelled
# counts for the report.
DUE_WORK: tuple[Callable[..., dict[str, int]], ...] = (
    tiers.run_due,
    rewards.run_due,
    referrals.run_due,
    community.run_due,
    lifecycle.run_due,
    billing.run_due,
    # Once a day: stages, RFM segments, churn flags (member.at_risk), retention alerts.
    analytics.run_due,
    webhooks.run_due,
)
# With several workers (``loyalty jobs run --workers N``) these run beside the rest of
# `DUE_WORK`, in a thread with a session of its own: the analytics' daily pass, the longest
# (every member's stage), reads orders and activity as any reader does and writes nothing the
# others read. `AFTER_BESIDE` then runs once more, for the events they published meanwhile.
BESIDE: frozenset[Callable[..., dict[str, int]]] = frozenset({analytics.run_due})
AFTER_BESIDE: Callable[..., dict[str, int]] = webhooks.run_due


def install() -> None:
    bus.install(SUBSCRIBERS)
    plug_ports()


def run_area_due_work(
    session: Session,
    *,
    batch_size: int,
    works: Sequence[Callable[..., dict[str, int]]] | None = None,
) -> dict[str, int]:
    """Run ``works`` (`DUE_WORK` by default) once, in order; the labelled counts of all of
    it."""
    counts: dict[str, int] = {}
    for work in DUE_WORK if works is None else works:
        for label, count in work(session, batch_size=batch_size).items():
            counts[label] = counts.get(label, 0) + count
    return counts
