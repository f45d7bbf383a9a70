"""Alembic environment: online migrations against the configured database."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from collector.partitions import include_object
from core.db.connection import sqlalchemy_url
from core.db.embedded import database_url
from core.settings import get_database_settings
from migrations.models import load_all_models

target_metadata = load_all_models()


def _run(url: str) -> None:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_object=include_object,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def run_migrations_online() -> None:
    url = context.config.attributes.get("database_url")
    if url:
        _run(url)
        return
    with database_url(get_database_settings()) as resolved:
        _run(resolved)


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
