"""Order facts: per member what repurchase and lifetime value need of their counted orders
(first and second order times, how many, revenue net of refunds), kept by the worker
(`order_facts`), and how far it goes (`order_facts_state`, one row once built).

Revision ID: 0016_order_facts
Revises: 0015_cohort_activity
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_order_facts"
down_revision = "0015_cohort_activity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_facts",
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("second_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("revenue", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_order_facts_member_id_members")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_order_facts")),
    )
    op.create_index("ix_order_facts_first_at", "order_facts", ["first_at"])
    op.create_table(
        "order_facts_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("through", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_order_facts_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_facts_state")),
    )


def downgrade() -> None:
    op.drop_table("order_facts_state")
    op.drop_index("ix_order_facts_first_at", table_name="order_facts")
    op.drop_table("order_facts")
