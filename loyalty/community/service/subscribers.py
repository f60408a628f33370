"""What `loyalty.wiring` hooks up: the subscribers to orders and referrals (badge levels awarded
when an order or a qualified referral reaches them, revoked when a refund or a clawback undoes
them), run inside the publishing unit of work, and the community's due work for the job.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.community.models import BadgeAward
from loyalty.community.service.badges import (
    ORDER_RULES,
    _active_badges,
    _evaluate,
    _revoke_unreached,
)
from loyalty.ledger.events import OrderRecorded, OrderRefunded
from loyalty.members import service as members_service
from loyalty.referrals.events import ReferralClawedBack, ReferralQualified


def on_order_recorded(session: Session, event: OrderRecorded) -> None:
    """Subscriber: an order was recorded, the member's wallet locked: award the spend and
    order-count badge levels the order reaches (with their bonus points)."""
    badges = [badge for badge in _active_badges(session) if badge.rule in ORDER_RULES]
    if not badges:
        return
    member = members_service.get_member(session, event.member_id)
    _evaluate(session, member, badges, event.occurred_at, event.actor, order_pk=event.order_pk)


def on_order_refunded(session: Session, event: OrderRefunded) -> None:
    """Subscriber: a refund of the order was written, the member's wallet locked: refresh
    the member's spend and order
    metrics, and revoke the levels that this order earned, of badges that say
    ``revoke_on_refund``, whose threshold the member no longer reaches; their bonus points
    are clawed back under the programme's refund policy."""
    badges = [badge for badge in _active_badges(session) if badge.rule in ORDER_RULES]
    earned_by_order = list(
        session.scalars(
            select(BadgeAward.badge_id).where(
                BadgeAward.order_pk == event.order_pk, BadgeAward.revoked_at.is_(None)
            )
        )
    )
    if not badges and not earned_by_order:
        return
    member = members_service.get_member(session, event.member_id)
    _revoke_unreached(
        session,
        member,
        badges,
        event.occurred_at,
        event.actor,
        also=earned_by_order,
        reason="order refunded",
    )


def on_referral_clawed_back(session: Session, event: ReferralClawedBack) -> None:
    """Subscriber: one of the referrer's referrals was clawed back, the referrer's wallet
    locked: refresh the qualified-referral metric and revoke the levels no longer reached of
    badges that say ``revoke_on_refund``."""
    badges = [badge for badge in _active_badges(session) if badge.rule == "referrals"]
    if badges:
        member = members_service.get_member(session, event.referrer_id)
        _revoke_unreached(
            session, member, badges, event.occurred_at, event.actor, reason="referral clawed back"
        )


def on_referral_qualified(session: Session, event: ReferralQualified) -> None:
    """Subscriber: one of the referrer's referrals qualified, the referrer's wallet locked:
    award the qualified-referral badge levels reached (with their bonus points)."""
    badges = [badge for badge in _active_badges(session) if badge.rule == "referrals"]
    if not badges:
        return
    member = members_service.get_member(session, event.referrer_id)
    _evaluate(session, member, badges, event.occurred_at, event.actor)


def run_due(session: Session, *, batch_size: int = 200) -> dict[str, int]:
    """Due community work for ``loyalty jobs run``: none. Badges are awarded in the
    transaction of what earned them, and a challenge simply stops counting at its end."""
    return {}
