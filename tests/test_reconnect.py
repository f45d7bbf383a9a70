"""After an outage the collector is back within 2 s of PostgreSQL, however long the outage was.

A private cluster is stopped for longer than psycopg_pool's own back-off would forgive (it
doubles from 1 s: after 8 s down, its next attempt came up to 7 s after the database's return),
then started; batches are posted every 50 ms until one is stored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from collector.partitions import maintain_for_settings
from core.auth.scopes import Scope
from core.db.connection import libpq_conninfo, make_engine
from migrations.runner import upgrade
from tests import factories
from tests.apikeys import commit_key
from tests.database import database_settings, utc_today
from tests.processes import PrivateCluster, private_cluster
from tests.servers import collector_settings, run_collector

OUTAGE_S = 8.0
RECOVERY_LIMIT_S = 2.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as cluster:
        upgrade(cluster.url)
        maintain_for_settings(
            libpq_conninfo(cluster.url), database_settings(cluster.url), today=utc_today()
        )
        yield cluster


def post_one(client: httpx.Client) -> int:
    try:
        return client.post("/v1/events", json={"events": [factories.exposure()]}).status_code
    except httpx.TransportError:
        return 0


def test_the_collector_is_back_within_2_s_of_the_database(cluster: PrivateCluster) -> None:
    engine = make_engine(cluster.url, pool_size=1)
    key = commit_key(engine, "reconnect-test", [Scope.INGEST])
    engine.dispose()
    settings = collector_settings(cluster.url, db_timeout_s=1.0, retry_after_s=1, db_pool_min=2)
    with (
        run_collector(settings) as url,
        httpx.Client(base_url=url, headers=key.headers, timeout=10) as client,
    ):
        assert post_one(client) == 200
        cluster.stop("fast")
        down_until = time.monotonic() + OUTAGE_S
        statuses = set()
        while time.monotonic() < down_until:
            statuses.add(post_one(client))
            time.sleep(0.2)
        assert statuses == {503}, statuses
        cluster.start()  # returns once the server accepts connections
        back = time.monotonic()
        while (status := post_one(client)) != 200 and time.monotonic() - back < 30:
            time.sleep(0.05)
        recovered_s = time.monotonic() - back
    assert status == 200
    assert recovered_s <= RECOVERY_LIMIT_S, f"503s went on {recovered_s:.1f} s after the return"
