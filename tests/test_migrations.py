"""The schema comes from Alembic migrations only, and matches the models exactly."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from collector.partitions import include_object, maintain_for_settings
from core.db.connection import libpq_conninfo, sqlalchemy_url
from migrations.models import load_all_models
from migrations.runner import alembic_config, current_revision, head_revision, upgrade
from tests.database import (
    EVENT_TABLES,
    PARTITIONED_TABLES,
    connect,
    database_settings,
    fresh_database,
    partition_days,
    utc_today,
)


def schema_diff(url: str) -> list[Any]:
    """What autogenerate would change to make the database match the models."""
    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_object": include_object,
                    "compare_type": True,
                    "compare_server_default": True,
                },
            )
            return list(compare_metadata(context, load_all_models()))
    finally:
        engine.dispose()


def public_tables(url: str) -> set[str]:
    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        return {t for t in inspect(engine).get_table_names() if not re.search(r"_p\d{8}$", t)}
    finally:
        engine.dispose()


@pytest.fixture
def scratch_database_url() -> Iterator[str]:
    """An empty database of the test's own."""
    with fresh_database() as url:
        yield url


def test_there_is_a_single_head(database_url: str) -> None:
    heads = ScriptDirectory.from_config(alembic_config(database_url)).get_heads()
    assert len(heads) == 1
    assert heads[0] == head_revision(database_url)


def test_the_session_database_is_at_head(database_url: str) -> None:
    assert current_revision(database_url) == head_revision(database_url)


def test_the_migrated_schema_matches_the_models(database_url: str) -> None:
    # Partitions exist (the session made them) and must not show up as drift.
    with connect(database_url) as conn:
        assert partition_days(conn, "suggestion_shown")
    assert schema_diff(database_url) == []


def test_primary_keys_have_the_models_column_order(database_url: str) -> None:
    # Autogenerate does not compare the order of a key's columns, which decides where inserts
    # land in the index (time first, for the partitioned tables).
    engine = create_engine(sqlalchemy_url(database_url), poolclass=NullPool)
    try:
        inspector = inspect(engine)
        for name, table in load_all_models().tables.items():
            reflected = inspector.get_pk_constraint(name)["constrained_columns"]
            assert reflected == [c.name for c in table.primary_key.columns], name
    finally:
        engine.dispose()


def test_every_model_table_is_made_by_the_migrations(database_url: str) -> None:
    model_tables = set(load_all_models().tables)
    assert {*EVENT_TABLES, "api_keys", "experiments", "experiment_audit"} <= model_tables
    assert public_tables(database_url) == {*model_tables, "alembic_version"}
    with connect(database_url) as conn:
        kinds = {
            row["relname"]: row["relkind"]
            for row in conn.execute(
                "SELECT relname, relkind FROM pg_class WHERE relname = ANY(%s)",
                (list(EVENT_TABLES),),
            ).fetchall()
        }
    assert {name for name, kind in kinds.items() if kind == "p"} == set(PARTITIONED_TABLES)
    assert {name for name, kind in kinds.items() if kind == "r"} == {"feedback", "exposure"}


def test_downgrade_to_base_and_upgrade_again(scratch_database_url: str) -> None:
    url = scratch_database_url
    assert current_revision(url) is None
    upgrade(url)
    maintain_for_settings(libpq_conninfo(url), database_settings(url), today=utc_today())
    assert current_revision(url) == head_revision(url)

    command.downgrade(alembic_config(url), "base")
    assert current_revision(url) is None
    # Partitions go with their parents; only Alembic's own bookkeeping table is left.
    with connect(url) as conn:
        left = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    assert [row["tablename"] for row in left] == ["alembic_version"]

    upgrade(url)
    assert current_revision(url) == head_revision(url)
    assert schema_diff(url) == []


def test_upgrade_is_idempotent(database_url: str) -> None:
    upgrade(database_url)
    assert current_revision(database_url) == head_revision(database_url)


def test_the_codebook_revision_keeps_edits_people_made(scratch_database_url: str) -> None:
    url = scratch_database_url
    upgrade(url, "a4c9e1d27b35")
    with connect(url) as conn:
        conn.execute("UPDATE feedback_themes SET description = 'Ours.' WHERE id = 'latency'")
        conn.execute(
            "INSERT INTO feedback_theme_history (theme_id, action, before, after, actor) "
            "VALUES ('latency', 'edit', '{}', '{}', 'ana')"
        )
    upgrade(url)
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT t.id, t.description, count(h.id) AS edits FROM feedback_themes t "
            "JOIN feedback_theme_history h ON h.theme_id = t.id "
            "WHERE h.actor = 'migration:b81f5d3e9a47' OR t.id = 'latency' GROUP BY t.id"
        ).fetchall()
    revised = {row["id"]: row["description"] for row in rows}
    assert revised["latency"] == "Ours."
    assert revised["other"].startswith("Overall verdicts and comparisons between tools")
    assert len(revised) == 13
    command.downgrade(alembic_config(url), "a4c9e1d27b35")
    with connect(url) as conn:
        other = conn.execute(
            "SELECT description FROM feedback_themes WHERE id = 'other'"
        ).fetchone()
        revisions = conn.execute(
            "SELECT count(*) AS n FROM feedback_theme_history WHERE actor LIKE 'migration:%'"
        ).fetchone()
    assert other is not None and other["description"] == "Anything that fits no other theme."
    assert revisions is not None and revisions["n"] == 0
