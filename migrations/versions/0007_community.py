"""Community: event types, events, event rules, check-ins and streaks, badges, awards, leaderboard opt-ins.

Revision ID: 0007_community
Revises: 0006_referrals
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0007_community"
down_revision = "0006_referrals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
