"""The configuration's version: one row whose number every change of the programme's
configuration sets anew, so that processes can cache the configuration and see at once when it
changed (`loyalty.configcache`).

Revision ID: 0012_config_version
Revises: 0011_lifecycle_triggers
Create Date: 2026-12-05
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0012_config_version"
down_revision = "0011_lifecycle_triggers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "config_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_config_version")),
    )
    # Random, as every later version: a database never starts at a number another one used.
    op.bulk_insert(table, [{"id": 1, "version": secrets.randbits(62) + 1}])


def downgrade() -> None:
    op.drop_table("config_version")
