"""Lifecycle triggers: their settings (one row, every trigger on, 30 days' notice of expiry, 90
days to inactivity), a high-water mark per trigger, the occurrences sent (unique per member,
type and occurrence), and the indexes their walks follow: lots by expiry moment, wallets by
last activity, members by birthday and time zone and by enrolment.

On PostgreSQL the indexes on the existing tables are built concurrently, outside the
migration's transaction, so that orders and enrolments go on while they are built.

Revision ID: 0011_lifecycle_triggers
Revises: 0010_outbox_webhooks
Create Date: 2026-12-05
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0011_lifecycle_triggers"
down_revision = "0010_outbox_webhooks"
branch_labels = None
depends_on = None

TYPES = (
    "type IN ('lifecycle.first_order', 'points.expiring_soon', 'member.birthday', "
    "'member.inactive')"
)
# (name, table, columns) of the indexes the walks follow.
WALK_INDEXES = (
    ("ix_lots_expires_at", "lots", ["expires_at", "wallet_id"]),
    ("ix_wallets_last_activity_at", "wallets", ["last_activity_at", "member_id"]),
    ("ix_members_birthday", "members", ["birthday", "timezone"]),
    ("ix_members_enrolled_at", "members", ["enrolled_at", "id"]),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # CREATE INDEX CONCURRENTLY cannot run in a transaction. First, so that a run stopped
        # while building them starts again cleanly (IF NOT EXISTS): the rest is one
        # transaction with the revision's record.
        with op.get_context().autocommit_block():
            for name, table, columns in WALK_INDEXES:
                op.create_index(
                    name, table, columns, postgresql_concurrently=True, if_not_exists=True
                )
    else:
        for name, table, columns in WALK_INDEXES:
            op.create_index(name, table, columns)
    settings = op.create_table(
        "lifecycle_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("first_order_enabled", sa.Boolean(), nullable=False),
        sa.Column("expiring_soon_enabled", sa.Boolean(), nullable=False),
        sa.Column("birthday_enabled", sa.Boolean(), nullable=False),
        sa.Column("inactive_enabled", sa.Boolean(), nullable=False),
        sa.Column("expiring_soon_days", sa.Integer(), nullable=False),
        sa.Column("inactive_days", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "expiring_soon_days BETWEEN 1 AND 365",
            name=op.f("ck_lifecycle_settings_expiring_soon_days"),
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_lifecycle_settings_single_row")),
        sa.CheckConstraint(
            "inactive_days BETWEEN 1 AND 3650", name=op.f("ck_lifecycle_settings_inactive_days")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_settings")),
    )
    op.bulk_insert(
        settings,
        [
            {
                "id": 1,
                "first_order_enabled": True,
                "expiring_soon_enabled": True,
                "birthday_enabled": True,
                "inactive_enabled": True,
                "expiring_soon_days": 30,
                "inactive_days": 90,
                "updated_at": dt.datetime.now(dt.UTC),
            }
        ],
    )
    op.create_table(
        "lifecycle_marks",
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("mark_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cursor", sa.String(length=200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(TYPES, name=op.f("ck_lifecycle_marks_type")),
        sa.PrimaryKeyConstraint("type", name=op.f("pk_lifecycle_marks")),
    )
    op.create_table(
        "lifecycle_sent",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("occurrence", sa.String(length=64), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(TYPES, name=op.f("ck_lifecycle_sent_type")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_sent")),
        sa.UniqueConstraint(
            "member_id",
            "type",
            "occurrence",
            name=op.f("uq_lifecycle_sent_member_id_type_occurrence"),
        ),
    )
    op.create_index("ix_lifecycle_sent_sent_at", "lifecycle_sent", ["sent_at"], unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(WALK_INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_index("ix_lifecycle_sent_sent_at", table_name="lifecycle_sent")
    op.drop_table("lifecycle_sent")
    op.drop_table("lifecycle_marks")
    op.drop_table("lifecycle_settings")
