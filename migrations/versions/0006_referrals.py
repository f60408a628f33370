"""Referrals: programme terms, referrals, rewards given and reviews.

Revision ID: 0006_referrals
Revises: 0005_rewards
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0006_referrals"
down_revision = "0005_rewards"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
