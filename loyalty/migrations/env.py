"""Alembic environment: the URL or connection comes from `loyalty.migrator.alembic_config`,
or from the running app when called through ``loyalty db``."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy import JSON, Connection, create_engine, pool

from loyalty.config import normalise_database_url
from loyalty.db import Base, ExactDecimal, UTCDateTime
from loyalty.migrator import load_models

load_models()
target_metadata = Base.metadata
config = context.config


def _url() -> str:
    url = config.attributes.get("url")
    if url is None:
        from flask import current_app

        url = current_app.config["DATABASE_URL"]
    return normalise_database_url(str(url))


def _render_item(kind: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Render our column types as plain SQLAlchemy ones, so migrations never import the app."""
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if kind == "type" and isinstance(obj, ExactDecimal):
        return "sa.Numeric()"  # text on SQLite: see 0019_wallet_spend
    if (
        kind == "type"
        and isinstance(obj, JSON)
        and "postgresql" in getattr(obj, "_variant_mapping", {})
    ):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.JSON().with_variant(postgresql.JSONB(), "postgresql")'
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _run(connection)
        connection.commit()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
