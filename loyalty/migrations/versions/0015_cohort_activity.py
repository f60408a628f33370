"""Cohort activity: per member and basis (enrolment, first order) the day they joined and
which retention marks and calendar months since they were active in, kept by the worker
(`cohort_activity`), and how far it goes (`cohort_activity_state`, one row once built).

Revision ID: 0015_cohort_activity
Revises: 0014_analytics
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_cohort_activity"
down_revision = "0014_analytics"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cohort_activity",
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("basis", sa.String(length=16), nullable=False),
        sa.Column("joined_on", sa.Date(), nullable=False),
        sa.Column("marks", sa.Integer(), nullable=False),
        sa.Column("months", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "basis IN ('enrollment', 'first_order')", name=op.f("ck_cohort_activity_basis")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_cohort_activity_member_id_members")
        ),
        sa.PrimaryKeyConstraint("member_id", "basis", name=op.f("pk_cohort_activity")),
    )
    op.create_index("ix_cohort_activity_basis_joined_on", "cohort_activity", ["basis", "joined_on"])
    op.create_table(
        "cohort_activity_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("through", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_cohort_activity_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cohort_activity_state")),
    )


def downgrade() -> None:
    op.drop_table("cohort_activity_state")
    op.drop_index("ix_cohort_activity_basis_joined_on", table_name="cohort_activity")
    op.drop_table("cohort_activity")
