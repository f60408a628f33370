"""Lots keep room on their pages for their own updates (`fillfactor`): the job's activation
(`activated_at`) and expiry (`remaining`, `expired_at`) touch no indexed column, so PostgreSQL
can write a lot's new version on the same page without new index entries (a HOT update), but
only when the page has room for it. Full pages sent every update to another page, with an
entry in each of the table's four indexes.

Only pages written from now on keep the room: the lots already stored stay on full pages until
the table is rewritten (README "Running it"), which this migration does not do, as it would
lock the table for as long as the rewrite takes.

Revision ID: 0018_lots_fillfactor
Revises: 0017_orders_by_member
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0018_lots_fillfactor"
down_revision = "0017_orders_by_member"
branch_labels = None
depends_on = None

# The share of each page that inserts fill: the rest takes the new versions of the lots one
# transaction updates before the old ones can be pruned, and the job settles whole pages of
# lots at once (lots written together fall due together), each lot once. At 70 about 60 % of
# the job's updates were HOT and PostgreSQL's CPU hardly fell; at 50 all of them
# (benchmarks/README.md). The model says the same (`postgresql_with` in
# loyalty/ledger/models.py).
FILLFACTOR = 50


def upgrade() -> None:
    # A storage parameter only: it takes a SHARE UPDATE EXCLUSIVE lock (reads and writes
    # go on) and rewrites nothing. SQLite has no such setting.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE lots SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE lots RESET (fillfactor)")
