"""Retention: ``codelift db maintain`` drops raw partitions past the retention period, and the
analysis of a live experiment whose history is older than that does not change.

Analysis reads the rollups; maintenance rolls up before it drops, so even events that no
refresh had counted yet are kept in the analysis.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from codelift.cli import app
from collector.partitions import maintain_partitions, partitioned_tables
from core.db.connection import libpq_conninfo
from experiments.analysis.metrics_sql import ExperimentData, load_experiment_data
from migrations.models import load_all_models
from simulator.synthetic import SyntheticConfig, load_synthetic
from tests.database import PgConnection, clear_rollups, partition_days, utc_today

EXPERIMENT = "retention-live"
RETENTION_DAYS = 10
HISTORY_DAYS = 16


@pytest.fixture
def old_history(database_url: str, pg: PgConnection, clean_events: None) -> Iterator[None]:
    """A running experiment with 16 days of events (the newest two hours old), never rolled up;
    partitions for those days; everything removed afterwards."""
    clear_rollups(pg)
    today = utc_today()
    tables = partitioned_tables(load_all_models())
    conninfo = libpq_conninfo(database_url)
    maintain_partitions(
        conninfo, tables, first_day=today - dt.timedelta(days=HISTORY_DAYS + 2), last_day=today
    )
    config = SyntheticConfig(
        experiment=EXPERIMENT, users=150, events=5000, days=HISTORY_DAYS, pre_days=1.0, seed=7
    )
    load_synthetic(pg, config)
    try:
        yield
    finally:
        clear_rollups(pg)
        # Back to the session's partitions: the accepted window only.
        maintain_partitions(
            conninfo, tables, first_day=today, last_day=today, drop_before=today - dt.timedelta(7)
        )


def analysis(engine: Engine, source: str) -> ExperimentData:
    with engine.connect() as conn:
        return load_experiment_data(
            conn,
            experiment=EXPERIMENT,
            by_language=True,
            source=source,  # type: ignore[arg-type]
        )


def sums(data: ExperimentData) -> dict[tuple[str, str, str | None], tuple[float, ...]]:
    return {(m.metric, m.arm, m.language): dataclasses.astuple(m.moments) for m in data.metrics}


def test_dropping_old_partitions_leaves_a_live_experiments_analysis_unchanged(
    old_history: None, database_url: str, engine: Engine, pg: PgConnection
) -> None:
    before = analysis(engine, "raw")
    assert sum(before.users_per_arm.values()) > 100

    result = CliRunner().invoke(
        app,
        ["db", "maintain"],
        env={
            "CODELIFT_DATABASE_URL": database_url,
            "CODELIFT_RETENTION_DAYS": str(RETENTION_DAYS),
            "CODELIFT_MAX_EVENT_AGE_DAYS": "7",
        },
    )
    assert result.exit_code == 0, result.output
    assert "dropped 0" not in result.output

    cutoff = utc_today() - dt.timedelta(days=RETENTION_DAYS)
    assert min(partition_days(pg, "suggestion_shown")) == cutoff
    oldest = pg.execute("SELECT min(client_ts) AS t FROM suggestion_shown").fetchone()
    assert oldest is not None and oldest["t"].date() >= cutoff
    # The raw events the analysis used are partly gone...
    assert sums(analysis(engine, "raw")) != sums(before)
    # ...but the analysis, from the rollups, is what it was on the full raw history.
    after = analysis(engine, "rollups")
    assert after.users_per_arm == before.users_per_arm
    assert after.first_exposure == before.first_exposure
    assert sums(after).keys() == sums(before).keys()
    for key, moments in sums(before).items():
        assert sums(after)[key] == pytest.approx(moments, rel=1e-12), key
