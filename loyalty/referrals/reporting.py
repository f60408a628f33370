"""Referrals as reports may read them: a read-only select for the analytics above."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

from loyalty.referrals.models import Referral


def referrals() -> Select[*tuple[Any, ...]]:
    """Every referral: ``referrer_id``, ``referee_id``, ``status``, ``created_at``,
    ``qualified_at``."""
    return select(
        Referral.referrer_id,
        Referral.referee_id,
        Referral.status,
        Referral.created_at,
        Referral.qualified_at,
    )
