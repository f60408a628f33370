"""Channels: every API client belongs to one (a storefront, a POS, an app), and order, refund
and event ids are unique per channel instead of per API client; the maximum age of orders
and events.

Existing clients join the programme's default channel. Where two clients had reported the same
order, refund or event id, the later clients each get a channel of their own, so no record
changes meaning.

Revision ID: 0009_channels
Revises: 0008_ledger_reconciliation
Create Date: 2026-12-04
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0009_channels"
down_revision = "0008_ledger_reconciliation"
branch_labels = None
depends_on = None

DEFAULT_CHANNEL = "chn_default"
# (table, natural key) pairs that become unique per channel.
KEYED = (("orders", "order_id"), ("refunds", "refund_id"), ("community_events", "event_id"))


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channels")),
        sa.UniqueConstraint("name", name=op.f("uq_channels_name")),
    )
    now = dt.datetime.now(dt.UTC)
    channels = sa.table(
        "channels",
        sa.column("id", sa.String),
        sa.column("name", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(channels, [{"id": DEFAULT_CHANNEL, "name": "Default", "created_at": now}])

    with op.batch_alter_table("program_settings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("max_order_age_days", sa.Integer(), nullable=False, server_default="30")
        )
    with op.batch_alter_table("program_settings", schema=None) as batch_op:
        batch_op.alter_column("max_order_age_days", server_default=None)
        batch_op.create_check_constraint(
            "max_order_age_days", "max_order_age_days BETWEEN 1 AND 3650"
        )

    bind = op.get_bind()
    own = _own_channels(bind)
    for client_id, name in own.items():
        op.bulk_insert(channels, [{"id": _channel_id(client_id), "name": name, "created_at": now}])

    with op.batch_alter_table("api_clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("channel_id", sa.String(length=40), nullable=True))
    for table, _ in (("api_clients", None), *KEYED):
        column = "id" if table == "api_clients" else "client_id"
        if table != "api_clients":
            with op.batch_alter_table(table, schema=None) as batch_op:
                batch_op.add_column(sa.Column("channel_id", sa.String(length=40), nullable=True))
        bind.execute(sa.text(f"UPDATE {table} SET channel_id = :c"), {"c": DEFAULT_CHANNEL})
        for client_id in own:
            bind.execute(
                sa.text(f"UPDATE {table} SET channel_id = :c WHERE {column} = :client"),
                {"c": _channel_id(client_id), "client": client_id},
            )

    with op.batch_alter_table("api_clients", schema=None) as batch_op:
        batch_op.alter_column("channel_id", existing_type=sa.String(length=40), nullable=False)
        batch_op.create_foreign_key(
            op.f("fk_api_clients_channel_id_channels"), "channels", ["channel_id"], ["id"]
        )
    for table, key in KEYED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("channel_id", existing_type=sa.String(length=40), nullable=False)
            batch_op.create_foreign_key(
                op.f(f"fk_{table}_channel_id_channels"), "channels", ["channel_id"], ["id"]
            )
            batch_op.drop_constraint(op.f(f"uq_{table}_client_id_{key}"), type_="unique")
            batch_op.create_unique_constraint(
                op.f(f"uq_{table}_channel_id_{key}"), ["channel_id", key]
            )
            # Who reported it, for the record (any client of the channel may).
            batch_op.alter_column("client_id", existing_type=sa.String(length=40), nullable=True)


def downgrade() -> None:
    for table, key in reversed(KEYED):
        # Imported history has no reporting client; before channels every row had one.
        op.execute(f"UPDATE {table} SET client_id = 'import' WHERE client_id IS NULL")
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(op.f(f"uq_{table}_channel_id_{key}"), type_="unique")
            batch_op.drop_constraint(op.f(f"fk_{table}_channel_id_channels"), type_="foreignkey")
            batch_op.drop_column("channel_id")
            batch_op.alter_column("client_id", existing_type=sa.String(length=40), nullable=False)
            batch_op.create_unique_constraint(
                op.f(f"uq_{table}_client_id_{key}"), ["client_id", key]
            )
    with op.batch_alter_table("api_clients", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("fk_api_clients_channel_id_channels"), type_="foreignkey")
        batch_op.drop_column("channel_id")
    with op.batch_alter_table("program_settings", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_program_settings_max_order_age_days"), type_="check")
        batch_op.drop_column("max_order_age_days")
    op.drop_table("channels")


def _channel_id(client_id: str) -> str:
    return f"chn_{client_id}"[:40]


def _own_channels(bind: sa.Connection) -> dict[str, str]:
    """Clients that must keep a channel of their own: those that reported an order, refund or
    event id another client also reported (all but the first such client, by id)."""
    own: dict[str, str] = {}
    for table, key in KEYED:
        rows = bind.execute(
            sa.text(
                f"SELECT {key}, client_id FROM {table} WHERE {key} IN ("
                f"SELECT {key} FROM {table} GROUP BY {key} "
                "HAVING COUNT(DISTINCT client_id) > 1) "
                f"ORDER BY {key}, client_id"
            )
        ).all()
        first: dict[str, str] = {}
        for value, client_id in rows:
            if first.setdefault(value, client_id) != client_id:
                own[client_id] = ""
    if own:
        names: dict[str, str] = dict(
            bind.execute(
                sa.text("SELECT id, name FROM api_clients WHERE id IN :ids").bindparams(
                    sa.bindparam("ids", expanding=True)
                ),
                {"ids": list(own)},
            ).all()
        )
        for client_id in own:
            # Client ids are unique and at most 40 characters: the name stays unique.
            own[client_id] = f"{names.get(client_id, 'Client')[:56]} ({client_id})"
    return own
