"""Reward claims as reports may read them: a read-only select for the analytics above."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

from loyalty.rewards.models import Claim


def claims() -> Select[*tuple[Any, ...]]:
    """Every claim: ``member_id``, ``created_at``, ``source``, ``status``, ``points``."""
    return select(Claim.member_id, Claim.created_at, Claim.source, Claim.status, Claim.points)
