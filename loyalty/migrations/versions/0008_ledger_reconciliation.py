"""Ledger reconciliation: the programme's time zone, a resumable due-sweep cursor, what a
refund could not take back (shortfall, debt, already expired, still outstanding) and the
refund each entry carries out.

Revision ID: 0008_ledger_reconciliation
Revises: 0007_community
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_ledger_reconciliation"
down_revision = "0007_community"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("program_settings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("timezone", sa.String(length=64), nullable=False, server_default="UTC")
        )
        batch_op.add_column(sa.Column("due_sweep_after", sa.String(length=40), nullable=True))
    with op.batch_alter_table("program_settings", schema=None) as batch_op:
        batch_op.alter_column("timezone", server_default=None)

    with op.batch_alter_table("refunds", schema=None) as batch_op:
        for name in ("debt", "points_expired", "outstanding"):
            batch_op.add_column(
                sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")
            )
    # What a refund recorded as a shortfall is still owed by the order's points.
    op.execute("UPDATE refunds SET outstanding = shortfall")
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        for name in ("debt", "points_expired", "outstanding"):
            batch_op.alter_column(name, server_default=None)
        batch_op.create_check_constraint("parts", "points_expired >= 0 AND debt >= 0")
        batch_op.create_check_constraint(
            "parts_sum", "shortfall + debt + points_expired <= points_reversed"
        )
        batch_op.create_check_constraint(
            "outstanding", "outstanding >= 0 AND outstanding <= shortfall + debt"
        )

    # Entries are append-only (triggers): add the column in place, never by copying the table.
    if op.get_bind().dialect.name == "postgresql":
        op.add_column("ledger_entries", sa.Column("refund_pk", sa.String(length=40)))
        op.create_foreign_key(
            op.f("fk_ledger_entries_refund_pk_refunds"),
            "ledger_entries",
            "refunds",
            ["refund_pk"],
            ["id"],
        )
    else:
        op.execute(
            "ALTER TABLE ledger_entries ADD COLUMN refund_pk VARCHAR(40) "
            "CONSTRAINT fk_ledger_entries_refund_pk_refunds REFERENCES refunds (id)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(
            op.f("fk_ledger_entries_refund_pk_refunds"), "ledger_entries", type_="foreignkey"
        )
        op.drop_column("ledger_entries", "refund_pk")
    else:
        # SQLite cannot drop a column with a foreign key in place; copying the table drops its
        # append-only triggers, so they are made again.
        with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
            batch_op.drop_column("refund_pk")
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER ledger_entries_no_{operation.lower()} BEFORE {operation} "
                "ON ledger_entries BEGIN SELECT RAISE(ABORT, 'ledger history is append-only'); "
                "END"
            )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_refunds_outstanding"), type_="check")
        batch_op.drop_constraint(op.f("ck_refunds_parts_sum"), type_="check")
        batch_op.drop_constraint(op.f("ck_refunds_parts"), type_="check")
        for name in ("outstanding", "points_expired", "debt"):
            batch_op.drop_column(name)
    with op.batch_alter_table("program_settings", schema=None) as batch_op:
        batch_op.drop_column("due_sweep_after")
        batch_op.drop_column("timezone")
