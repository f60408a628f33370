"""Community: event types, events, event rules, check-ins and streaks, badges, awards, leaderboard opt-ins.

Revision ID: 0007_community
Revises: 0006_referrals
Create Date: 2026-11-22
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_community"
down_revision = "0006_referrals"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "community_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("streak_grace_days", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_community_settings_single_row")),
        sa.CheckConstraint(
            "streak_grace_days BETWEEN 0 AND 7",
            name=op.f("ck_community_settings_streak_grace_days"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_community_settings")),
    )
    op.create_table(
        "event_types",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("properties", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_event_types")),
    )
    op.create_table(
        "event_rules",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("per_unit_property", sa.String(length=64), nullable=True),
        sa.Column("points_per_unit", sa.Numeric(precision=12, scale=4), nullable=True),
        sa.Column("cap", sa.Integer(), nullable=True),
        sa.Column("cap_period", sa.String(length=8), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points >= 0", name=op.f("ck_event_rules_points")),
        sa.CheckConstraint(
            "points_per_unit IS NULL OR points_per_unit > 0",
            name=op.f("ck_event_rules_points_per_unit"),
        ),
        sa.CheckConstraint(
            "(per_unit_property IS NULL) = (points_per_unit IS NULL)",
            name=op.f("ck_event_rules_per_unit"),
        ),
        sa.CheckConstraint("cap IS NULL OR cap > 0", name=op.f("ck_event_rules_cap")),
        sa.CheckConstraint(
            "(cap IS NULL) = (cap_period IS NULL)", name=op.f("ck_event_rules_cap_period_given")
        ),
        sa.CheckConstraint(
            "cap_period IS NULL OR cap_period IN ('day', 'month')",
            name=op.f("ck_event_rules_cap_period"),
        ),
        sa.ForeignKeyConstraint(
            ["event_type"],
            ["event_types.name"],
            name=op.f("fk_event_rules_event_type_event_types"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_rules")),
        sa.UniqueConstraint("event_type", name=op.f("uq_event_rules_event_type")),
    )
    op.create_table(
        "community_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("local_date", sa.Date(), nullable=False),
        sa.Column("properties", JSON, nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points >= 0", name=op.f("ck_community_events_points")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_community_events_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_community_events")),
        sa.UniqueConstraint(
            "client_id", "event_id", name=op.f("uq_community_events_client_id_event_id")
        ),
    )
    op.create_index(
        "ix_community_events_member_id_type_occurred_at",
        "community_events",
        ["member_id", "type", "occurred_at"],
    )
    op.create_index(
        "ix_community_events_member_id_type_local_date",
        "community_events",
        ["member_id", "type", "local_date"],
    )
    op.create_table(
        "member_streaks",
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("current", sa.Integer(), nullable=False),
        sa.Column("longest", sa.Integer(), nullable=False),
        sa.Column("last_date", sa.Date(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "current >= 0 AND longest >= current", name=op.f("ck_member_streaks_lengths")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_streaks_member_id_members")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_streaks")),
    )
    op.create_table(
        "badges",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("rule", sa.String(length=16), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=True),
        sa.Column("property", sa.String(length=64), nullable=True),
        sa.Column("levels", JSON, nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_on_refund", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "rule IN ('event_count', 'streak', 'spend', 'orders', 'referrals', 'property_sum')",
            name=op.f("ck_badges_rule"),
        ),
        sa.CheckConstraint(
            "rule NOT IN ('event_count', 'property_sum') OR event_type IS NOT NULL",
            name=op.f("ck_badges_event_type"),
        ),
        sa.CheckConstraint(
            "rule <> 'property_sum' OR property IS NOT NULL", name=op.f("ck_badges_property")
        ),
        sa.CheckConstraint(
            "starts_at IS NULL OR ends_at IS NULL OR ends_at > starts_at",
            name=op.f("ck_badges_window"),
        ),
        sa.ForeignKeyConstraint(
            ["event_type"], ["event_types.name"], name=op.f("fk_badges_event_type_event_types")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_badges")),
    )
    op.create_table(
        "badge_awards",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("badge_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("level_name", sa.String(length=100), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("event_pk", sa.String(length=40), nullable=True),
        sa.Column("order_pk", sa.String(length=40), nullable=True),
        sa.Column("awarded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("points_clawed_back", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("level >= 1", name=op.f("ck_badge_awards_level")),
        sa.CheckConstraint("points >= 0", name=op.f("ck_badge_awards_points")),
        sa.ForeignKeyConstraint(
            ["badge_id"], ["badges.id"], name=op.f("fk_badge_awards_badge_id_badges")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_badge_awards_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_badge_awards")),
        sa.UniqueConstraint(
            "badge_id", "member_id", "level", name=op.f("uq_badge_awards_badge_id_member_id_level")
        ),
    )
    op.create_index("ix_badge_awards_member_id", "badge_awards", ["member_id"])
    op.create_index("ix_badge_awards_order_pk", "badge_awards", ["order_pk"])
    op.create_table(
        "badge_progress",
        sa.Column("badge_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("value", sa.Numeric(precision=20, scale=4), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["badge_id"], ["badges.id"], name=op.f("fk_badge_progress_badge_id_badges")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_badge_progress_member_id_members")
        ),
        sa.PrimaryKeyConstraint("badge_id", "member_id", name=op.f("pk_badge_progress")),
    )
    op.create_index("ix_badge_progress_badge_id_value", "badge_progress", ["badge_id", "value"])
    op.create_table(
        "leaderboard_profiles",
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("opted_in", sa.Boolean(), nullable=False),
        sa.Column("display_name", sa.String(length=50), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "NOT opted_in OR display_name IS NOT NULL",
            name=op.f("ck_leaderboard_profiles_display_name"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_leaderboard_profiles_member_id_members")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_leaderboard_profiles")),
    )
    settings = sa.table(
        "community_settings",
        sa.column("id", sa.Integer()),
        sa.column("streak_grace_days", sa.Integer()),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(
        settings, [{"id": 1, "streak_grace_days": 0, "updated_at": dt.datetime.now(dt.UTC)}]
    )


def downgrade() -> None:
    op.drop_table("leaderboard_profiles")
    op.drop_index("ix_badge_progress_badge_id_value", table_name="badge_progress")
    op.drop_table("badge_progress")
    op.drop_index("ix_badge_awards_order_pk", table_name="badge_awards")
    op.drop_index("ix_badge_awards_member_id", table_name="badge_awards")
    op.drop_table("badge_awards")
    op.drop_table("badges")
    op.drop_table("member_streaks")
    op.drop_index("ix_community_events_member_id_type_local_date", table_name="community_events")
    op.drop_index("ix_community_events_member_id_type_occurred_at", table_name="community_events")
    op.drop_table("community_events")
    op.drop_table("event_rules")
    op.drop_table("event_types")
    op.drop_table("community_settings")
