"""The ``codelift`` command line against the test database (and a scratch one)."""

from __future__ import annotations

import datetime as dt
import gc
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from codelift.cli import app
from collector.partitions import maintain_partitions, partition_name
from core.auth.keys import hash_key
from core.auth.models import ApiKey
from core.db.connection import libpq_conninfo, make_engine
from migrations.runner import current_revision, head_revision
from tests import factories
from tests.database import (
    PARTITIONED_TABLES,
    PgConnection,
    clear_rollups,
    connect,
    fresh_database,
    partition_days,
    table_exists,
    utc_today,
)
from tests.servers import AUTH_CACHE_TTL_S

SECRET = re.compile(r"^cl_[A-Za-z0-9_-]{43}$")


def run(database_url: str, *args: str) -> Result:
    """Run ``codelift ARGS`` with CODELIFT_DATABASE_URL pointing at ``database_url``."""
    result = CliRunner().invoke(
        app, list(args), env={"CODELIFT_DATABASE_URL": database_url, "DATABASE_URL": None}
    )
    # The commands open engines of their own; make any left open show up in this test.
    gc.collect()
    return result


@pytest.fixture
def created_keys(pg: PgConnection) -> Iterator[list[int]]:
    """Ids of keys a test made through the CLI, deleted afterwards."""
    ids: list[int] = []
    yield ids
    pg.execute("DELETE FROM api_keys WHERE id = ANY(%s)", (ids,))


def create_key(database_url: str, created_keys: list[int], *args: str) -> tuple[int, str]:
    result = run(database_url, "keys", "create", *args)
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    match = re.search(r"created key (\d+)", result.stderr)
    assert match is not None, result.stderr
    created_keys.append(int(match.group(1)))
    return int(match.group(1)), secret


def test_help_lists_the_command_groups() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("db", "keys", "collector"):
        assert command in result.stdout


def test_keys_create_prints_a_key_once_that_then_authenticates(
    database_url: str, created_keys: list[int], http: httpx.Client, session: Session
) -> None:
    key_id, secret = create_key(database_url, created_keys, "ci-plugin", "--scope", "ingest")
    # stdout is the secret alone, so scripts can capture it; the rest goes to stderr.
    assert SECRET.match(secret)
    key = session.get_one(ApiKey, key_id)
    assert (key.name, key.scopes, key.key_hash) == ("ci-plugin", ["ingest"], hash_key(secret))
    response = http.post(
        "/v1/events",
        json=factories.batch(factories.exposure()),
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 200, response.text


def test_keys_create_defaults_to_ingest_and_takes_several_scopes(
    database_url: str, created_keys: list[int], session: Session
) -> None:
    default_id, _ = create_key(database_url, created_keys, "plain")
    several_id, _ = create_key(
        database_url, created_keys, "gateway", "--scope", "serve", "--scope", "admin"
    )
    assert session.get_one(ApiKey, default_id).scopes == ["ingest"]
    assert session.get_one(ApiKey, several_id).scopes == ["admin", "serve"]


def test_keys_create_refuses_unknown_scopes(database_url: str, session: Session) -> None:
    result = run(database_url, "keys", "create", "root-key", "--scope", "root")
    assert result.exit_code == 2
    assert "root" in result.output
    assert session.scalars(select(ApiKey).where(ApiKey.name == "root-key")).all() == []


def test_keys_list_never_prints_secrets(
    database_url: str, created_keys: list[int], session: Session
) -> None:
    key_id, secret = create_key(database_url, created_keys, "listed-key", "--scope", "serve")
    result = run(database_url, "keys", "list")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if "listed-key" in line)
    assert str(key_id) in line
    assert secret[:10] in line
    assert "active" in line
    assert secret not in result.output
    assert hash_key(secret) not in result.output


def test_keys_revoke_revokes_and_the_collector_stops_accepting_the_key(
    database_url: str, created_keys: list[int], http: httpx.Client, session: Session
) -> None:
    key_id, secret = create_key(database_url, created_keys, "to-revoke")
    headers = {"Authorization": f"Bearer {secret}"}
    events = factories.batch(factories.exposure())
    assert http.post("/v1/events", json=events, headers=headers).status_code == 200

    result = run(database_url, "keys", "revoke", str(key_id))
    assert result.exit_code == 0, result.output
    assert f"revoked key {key_id} (to-revoke)" in result.stdout
    assert session.get_one(ApiKey, key_id).revoked_at is not None
    listed = run(database_url, "keys", "list").stdout
    assert "revoked" in next(line for line in listed.splitlines() if "to-revoke" in line)

    time.sleep(AUTH_CACHE_TTL_S + 0.2)
    assert http.post("/v1/events", json=events, headers=headers).status_code == 403


def test_keys_revoke_of_an_unknown_id_fails(database_url: str) -> None:
    result = run(database_url, "keys", "revoke", "987654")
    assert result.exit_code == 2
    assert "no API key with id 987654" in result.output


def test_db_upgrade_on_the_test_database(database_url: str) -> None:
    result = run(database_url, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert f"database at {head_revision(database_url)}" in result.stdout


def test_db_upgrade_migrates_an_empty_database_and_makes_partitions() -> None:
    with fresh_database() as url:
        result = run(url, "db", "upgrade")
        assert result.exit_code == 0, result.output
        assert current_revision(url) == head_revision(url)
        # 7 days back, today and 7 ahead, for each partitioned table.
        assert re.search(rf"; {15 * len(PARTITIONED_TABLES)} partitions created", result.stdout)
        with connect(url) as conn:
            assert utc_today() in partition_days(conn, "suggestion_shown")


def test_db_maintain_drops_expired_partitions(database_url: str, pg: PgConnection) -> None:
    expired = utc_today() - dt.timedelta(days=100)
    maintain_partitions(
        libpq_conninfo(database_url), ["suggestion_shown"], first_day=expired, last_day=expired
    )
    assert table_exists(pg, partition_name("suggestion_shown", expired))
    try:
        result = run(database_url, "db", "maintain")
        assert result.exit_code == 0, result.output
        assert re.search(r"created \d+ partitions, dropped 1 \(retention 90 days\)", result.stdout)
        assert f"dropped suggestion_shown {expired:%Y-%m-%d}" in result.stdout
        assert not table_exists(pg, partition_name("suggestion_shown", expired))

        again = run(database_url, "db", "maintain")
        assert "created 0 partitions, dropped 0" in again.stdout
    finally:
        clear_rollups(pg)  # maintain rolls up first; the rollup tests start from nothing


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    """An ORM session on the test database that sees what the CLI committed."""
    engine = make_engine(database_url, pool_size=1)
    with Session(engine) as session:
        yield session
    engine.dispose()


def test_the_demo_scenario_the_command_defaults_to_exists() -> None:
    # A default path computed from the module's place breaks silently when the module moves.
    from codelift.commands.simulate import DEMO_SCENARIO

    assert DEMO_SCENARIO.is_file(), DEMO_SCENARIO
