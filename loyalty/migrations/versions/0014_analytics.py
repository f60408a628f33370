"""Retention analytics: its settings (one row: stage thresholds 30/90/180 days, a 30% drop for
the churn warning, RFM over 365 days, USD at 0.01 per point, alerts beyond 5 points), members'
stages and RFM scores with their history, churn-warning flags (one open per member), retention
alerts (one per kind and day), campaigns' holdout share, and the indexes the reports follow:
orders and ledger entries by time, redemptions by member, engagement events by type and time.

On PostgreSQL the indexes on the existing tables are built concurrently, outside the
migration's transaction, so that orders go on while they are built.

Revision ID: 0014_analytics
Revises: 0013_billing
Create Date: 2026-12-05
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision = "0014_analytics"
down_revision = "0013_billing"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STAGES = "stage IN ('new', 'active', 'silent', 'churned')"
SEGMENTS = (
    "segment IN ('champions', 'loyal', 'potential_loyalist', 'new_customer', 'promising', "
    "'need_attention', 'about_to_sleep', 'cannot_lose', 'at_risk', 'hibernating', 'lost')"
)
REPORT_INDEXES = (
    ("ix_orders_placed_at", "orders", ["placed_at"]),
    ("ix_ledger_entries_created_at", "ledger_entries", ["created_at"]),
    ("ix_redemptions_member_id_created_at", "redemptions", ["member_id", "created_at"]),
    ("ix_community_events_type_occurred_at", "community_events", ["type", "occurred_at"]),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            for name, table, columns in REPORT_INDEXES:
                op.create_index(
                    name, table, columns, postgresql_concurrently=True, if_not_exists=True
                )
    else:
        for name, table, columns in REPORT_INDEXES:
            op.create_index(name, table, columns)
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("holdout_pct", sa.Integer(), nullable=False, server_default="0"))
        batch.create_check_constraint("holdout_pct", "holdout_pct BETWEEN 0 AND 50")
    with op.batch_alter_table("campaigns") as batch:
        batch.alter_column("holdout_pct", server_default=None)
    settings = op.create_table(
        "analytics_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("new_days", sa.Integer(), nullable=False),
        sa.Column("active_days", sa.Integer(), nullable=False),
        sa.Column("silent_days", sa.Integer(), nullable=False),
        sa.Column("risk_drop_pct", sa.Integer(), nullable=False),
        sa.Column("rfm_days", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("cost_per_point", sa.Numeric(precision=12, scale=6), nullable=False),
        sa.Column("alert_drop_points", sa.Numeric(precision=5, scale=2), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_analytics_settings_single_row")),
        sa.CheckConstraint(
            "new_days BETWEEN 1 AND 365", name=op.f("ck_analytics_settings_new_days")
        ),
        sa.CheckConstraint(
            "active_days BETWEEN 1 AND 3650", name=op.f("ck_analytics_settings_active_days")
        ),
        sa.CheckConstraint(
            "silent_days > active_days AND silent_days <= 3650",
            name=op.f("ck_analytics_settings_silent_days"),
        ),
        sa.CheckConstraint(
            "risk_drop_pct BETWEEN 1 AND 100", name=op.f("ck_analytics_settings_risk_drop_pct")
        ),
        sa.CheckConstraint(
            "rfm_days BETWEEN 30 AND 3650", name=op.f("ck_analytics_settings_rfm_days")
        ),
        sa.CheckConstraint(
            "cost_per_point >= 0", name=op.f("ck_analytics_settings_cost_per_point")
        ),
        sa.CheckConstraint(
            "alert_drop_points > 0 AND alert_drop_points <= 100",
            name=op.f("ck_analytics_settings_alert_drop"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analytics_settings")),
    )
    op.bulk_insert(
        settings,
        [
            {
                "id": 1,
                "new_days": 30,
                "active_days": 90,
                "silent_days": 180,
                "risk_drop_pct": 30,
                "rfm_days": 365,
                "currency": "USD",
                "cost_per_point": Decimal("0.01"),
                "alert_drop_points": Decimal(5),
                "updated_at": dt.datetime.now(dt.UTC),
            }
        ],
    )
    op.create_table(
        "member_stages",
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("segment", sa.String(length=24), nullable=True),
        sa.Column("recency", sa.Integer(), nullable=True),
        sa.Column("frequency", sa.Integer(), nullable=True),
        sa.Column("monetary", sa.Integer(), nullable=True),
        sa.Column("last_active_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_order_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("revenue", sa.BigInteger(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(STAGES, name=op.f("ck_member_stages_stage")),
        sa.CheckConstraint("segment IS NULL OR " + SEGMENTS, name=op.f("ck_member_stages_segment")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_stages_member_id_members")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_stages")),
    )
    op.create_index("ix_member_stages_stage", "member_stages", ["stage"])
    op.create_index("ix_member_stages_segment", "member_stages", ["segment"])
    op.create_table(
        "member_stage_history",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("from_stage", sa.String(length=16), nullable=True),
        sa.Column("to_stage", sa.String(length=16), nullable=False),
        sa.Column("from_segment", sa.String(length=24), nullable=True),
        sa.Column("to_segment", sa.String(length=24), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_stage_history_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_stage_history")),
    )
    op.create_index(
        "ix_member_stage_history_member_id_id", "member_stage_history", ["member_id", "id"]
    )
    op.create_index("ix_member_stage_history_at", "member_stage_history", ["at"])
    op.create_table(
        "risk_flags",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("recent", sa.Integer(), nullable=False),
        sa.Column("baseline", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("last_active_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("flagged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "reason IN ('activity_drop', 'silent')", name=op.f("ck_risk_flags_reason")
        ),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('won_back', 'returned', 'churned')",
            name=op.f("ck_risk_flags_outcome"),
        ),
        sa.CheckConstraint(
            "(outcome IS NULL) = (closed_at IS NULL)", name=op.f("ck_risk_flags_closed")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_risk_flags_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_flags")),
    )
    op.create_index(
        "uq_risk_flags_open_member_id",
        "risk_flags",
        ["member_id"],
        unique=True,
        postgresql_where=sa.text("closed_at IS NULL"),
        sqlite_where=sa.text("closed_at IS NULL"),
    )
    op.create_index("ix_risk_flags_flagged_at", "risk_flags", ["flagged_at", "id"])
    op.create_index("ix_risk_flags_member_id", "risk_flags", ["member_id"])
    op.create_table(
        "retention_alerts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("current_rate", sa.Numeric(precision=7, scale=4), nullable=False),
        sa.Column("previous_rate", sa.Numeric(precision=7, scale=4), nullable=False),
        sa.Column("drop_points", sa.Numeric(precision=7, scale=2), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('week', 'month')", name=op.f("ck_retention_alerts_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_alerts")),
        sa.UniqueConstraint("kind", "day", name=op.f("uq_retention_alerts_kind_day")),
    )
    op.create_index("ix_retention_alerts_created_at", "retention_alerts", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_retention_alerts_created_at", table_name="retention_alerts")
    op.drop_table("retention_alerts")
    op.drop_index("ix_risk_flags_member_id", table_name="risk_flags")
    op.drop_index("ix_risk_flags_flagged_at", table_name="risk_flags")
    op.drop_index("uq_risk_flags_open_member_id", table_name="risk_flags")
    op.drop_table("risk_flags")
    op.drop_index("ix_member_stage_history_at", table_name="member_stage_history")
    op.drop_index("ix_member_stage_history_member_id_id", table_name="member_stage_history")
    op.drop_table("member_stage_history")
    op.drop_index("ix_member_stages_segment", table_name="member_stages")
    op.drop_index("ix_member_stages_stage", table_name="member_stages")
    op.drop_table("member_stages")
    op.drop_table("analytics_settings")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_constraint("holdout_pct", type_="check")
        batch.drop_column("holdout_pct")
    for name, table, _columns in reversed(REPORT_INDEXES):
        op.drop_index(name, table_name=table)
