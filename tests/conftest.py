"""Fixtures: a fresh database migrated by Alembic, ORM sessions rolled back per test, and the
collector served over real TCP.

Two kinds of isolation: ORM tests run inside a transaction rolled back after each test
(``db_session``); HTTP tests talk to a server with connections of its own, so they are isolated
by emptying the event tables after each test (``client``/``http``).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from collector.partitions import maintain_for_settings
from core.auth.scopes import Scope
from core.db.connection import libpq_conninfo, make_engine
from migrations.runner import upgrade
from tests.apikeys import Key, MakeKey, commit_key
from tests.database import (
    PgConnection,
    connect,
    database_settings,
    fresh_database,
    truncate_events,
    utc_today,
)
from tests.experiment_factories import CommittedRegistry
from tests.servers import HTTP_TIMEOUT_S, collector_settings, run_collector

# The environment every test runs in, and every service it starts inherits: named, because an
# unset one is production. Like production it refuses default secrets; tests that need
# development (or production) say so themselves.
TEST_ENVIRONMENT = "test"

# The dashboard tests' demo data: small enough to seed in ~2 s, big enough for
# the gate to roll the harmful experiment back.
DASHBOARD_SEED_EVENTS = 40_000
DASHBOARD_SEED_USERS = 1_000


@pytest.fixture(scope="session", autouse=True)
def codelift_environment() -> Iterator[None]:
    """CODELIFT_ENVIRONMENT=test for the whole session, whatever the shell running it set."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CODELIFT_ENVIRONMENT", TEST_ENVIRONMENT)
        yield


@pytest.fixture
def login_throttle() -> Iterator[None]:
    """The dashboard's process-wide login throttle, empty before and after the test."""
    from dashboard.login_throttle import LOGIN_THROTTLE

    LOGIN_THROTTLE.reset()
    yield
    LOGIN_THROTTLE.reset()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of its own for the test session, migrated to head, with partitions."""
    with fresh_database() as url:
        upgrade(url)
        maintain_for_settings(libpq_conninfo(url), database_settings(url), today=utc_today())
        yield url


@pytest.fixture(scope="session")
def dashboard_database_url() -> Iterator[str]:
    """A database of its own holding the dashboard's demo data (``simulator.dashboard_seed``),
    shared by the app tests and the browser test."""
    from simulator.dashboard_seed import seed_demo

    with fresh_database("codelift_dashboard") as url:
        upgrade(url)
        maintain_for_settings(libpq_conninfo(url), database_settings(url), today=utc_today())
        engine = make_engine(url, pool_size=1)
        try:
            # Tagged by the real tagger, so the pages show themes as they will in production.
            seed_demo(
                engine,
                events=DASHBOARD_SEED_EVENTS,
                users=DASHBOARD_SEED_USERS,
                tag_feedback=True,
            )
        finally:
            engine.dispose()
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    """The SQLAlchemy engine of the test database."""
    engine = make_engine(database_url, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg(database_url: str) -> Iterator[PgConnection]:
    """A plain autocommit psycopg connection for reading rows back and for set-up."""
    with connect(database_url) as conn:
        yield conn


@pytest.fixture
def db_session(engine: Engine) -> Iterator[Session]:
    """An ORM session inside a transaction that is rolled back after the test.

    ``create_savepoint`` lets the code under test commit (or roll back) as usual: its commits
    only release savepoints of the outer transaction.
    """
    with engine.connect() as connection:
        transaction = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            transaction.rollback()


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction rolled back after the test (Core-level tests)."""
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


@pytest.fixture
def make_key(engine: Engine, pg: PgConnection) -> Iterator[MakeKey]:
    """Commit keys for one test; they are deleted after it."""
    made: list[int] = []

    def make(
        name: str, scopes: list[Scope], *, revoked: bool = False, user_id: str | None = None
    ) -> Key:
        key = commit_key(engine, name, scopes, revoked=revoked, user_id=user_id)
        made.append(key.id)
        return key

    yield make
    pg.execute("DELETE FROM api_keys WHERE id = ANY(%s)", (made,))


@pytest.fixture(scope="session")
def ingest_key(engine: Engine) -> Key:
    """An active key with the ingest scope."""
    return commit_key(engine, "ide-plugin", [Scope.INGEST])


@pytest.fixture(scope="session")
def serve_only_key(engine: Engine) -> Key:
    """An active key without the ingest scope."""
    return commit_key(engine, "gateway", [Scope.SERVE])


@pytest.fixture(scope="session")
def revoked_key(engine: Engine) -> Key:
    """A key with the ingest scope that has been revoked."""
    return commit_key(engine, "old-plugin", [Scope.INGEST], revoked=True)


@pytest.fixture
def registry(engine: Engine) -> Iterator[CommittedRegistry]:
    """Registry changes committed for other connections to see; removed after the test."""
    registry = CommittedRegistry(engine)
    yield registry
    registry.cleanup()


@pytest.fixture(scope="session")
def collector_url(database_url: str) -> Iterator[str]:
    """Base URL of the collector, served by uvicorn in a thread for the whole session."""
    with run_collector(collector_settings(database_url)) as url:
        yield url


@pytest.fixture
def clean_events(pg: PgConnection) -> Iterator[None]:
    """Empty the event tables after the test."""
    yield
    truncate_events(pg)


@pytest.fixture
def http(collector_url: str, clean_events: None) -> Iterator[httpx.Client]:
    """An HTTP client for the collector, sending no credentials."""
    with httpx.Client(base_url=collector_url, timeout=HTTP_TIMEOUT_S) as client:
        yield client


@pytest.fixture
def client(collector_url: str, clean_events: None, ingest_key: Key) -> Iterator[httpx.Client]:
    """An HTTP client for the collector that presents the ingest key."""
    with httpx.Client(
        base_url=collector_url, timeout=HTTP_TIMEOUT_S, headers=ingest_key.headers
    ) as client:
        yield client
