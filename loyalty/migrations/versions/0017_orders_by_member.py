"""Orders indexed by member and placement time: a member's orders over a period (the caps'
day and month, a badge's window) are read through one index, whatever other members placed
meanwhile. The member's index alone left PostgreSQL's generic plan (the one a prepared
statement gets) combining it with the placement index, which reads every order of the period.

Revision ID: 0017_orders_by_member
Revises: 0016_order_facts
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0017_orders_by_member"
down_revision = "0016_order_facts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # On a large database an operator may build it beforehand without blocking writes
    # (`CREATE INDEX CONCURRENTLY`, see README "Running it"): then it exists already. A
    # concurrent build that failed or was interrupted leaves the index invalid (no query
    # uses it), and IF NOT EXISTS would keep it: such a one is built again here.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DO $$ BEGIN"
            " IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = 'ix_orders_member_id_placed_at'"
            " AND c.relnamespace = current_schema()::regnamespace AND NOT i.indisvalid)"
            " THEN DROP INDEX ix_orders_member_id_placed_at; END IF; END $$"
        )
    op.create_index(
        "ix_orders_member_id_placed_at", "orders", ["member_id", "placed_at"], if_not_exists=True
    )
    op.drop_index("ix_orders_member_id", table_name="orders")


def downgrade() -> None:
    op.create_index("ix_orders_member_id", "orders", ["member_id"])
    op.drop_index("ix_orders_member_id_placed_at", table_name="orders")
