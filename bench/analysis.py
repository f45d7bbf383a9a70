"""Analysis benchmark: a full ``analyze --by language`` from raw events and from rollups.

Run from the repository root: ``python -m bench.analysis [--sizes 1000000 10000000]``. For each
size it

1. makes a scratch database (as ``bench/ingest.py`` does), with daily partitions for the data;
2. loads synthetic data (``simulator.synthetic``: 100,000 users, 8 languages, 2 arms, 14 days
   of which the last 7 are the experiment's) by binary COPY, then ANALYZE;
3. times ``refresh_rollups`` (the first, full one, then an incremental one);
4. times ``load_experiment_data(by_language=True)`` from raw events and from rollups (best of
   ``--repeat``; plain and with CUPED), with the catalog's default caps and the latency
   quantiles, and checks the two give the same moments; then, as the baseline of the same run,
   from rollups without capping and quantiles.

Figures are printed and written to ``bench/results/analysis.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, text

from bench.ingest import scratch_database
from collector.partitions import maintain_partitions
from core.db.connection import libpq_conninfo, make_engine
from experiments.analysis.metrics_sql import ExperimentData, load_experiment_data
from experiments.analysis.rollups import EVENT_TABLES, refresh_rollups
from experiments.definitions.metrics_catalog import METRICS
from simulator.synthetic import SyntheticConfig, load_synthetic

RESULTS = Path(__file__).parent / "results" / "analysis.json"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def timed(run: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The best wall time of ``repeat`` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


# The catalog's default caps, as `codelift analyze` applies them to a definition without overrides.
CAPS = {name: info.capping for name, info in METRICS.items() if info.capping is not None}


def analyze(
    engine: Engine, source: str, cuped: bool, *, capped: bool = True, quantiles: bool = True
) -> ExperimentData:
    with engine.begin() as conn:
        return load_experiment_data(
            conn,
            experiment="synthetic",
            by_language=True,
            source=source,  # type: ignore[arg-type]
            cuped=cuped,
            caps=CAPS if capped else None,
            quantiles=quantiles,
        )


def same_moments(a: ExperimentData, b: ExperimentData) -> bool:
    """Whether two loads agree on every moment (to 1e-9 relative: float sums differ in order)."""
    for x, y in zip(a.metrics, b.metrics, strict=True):
        left, right = dataclasses.astuple(x.moments), dataclasses.astuple(y.moments)
        for u, v in zip(left, right, strict=True):
            if abs(u - v) > 1e-9 * max(1.0, abs(u), abs(v)):
                return False
    return [(q.metric, q.arm, q.language, dict(q.histogram)) for q in a.quantiles] == [
        (q.metric, q.arm, q.language, dict(q.histogram)) for q in b.quantiles
    ]


def run_size(server: str, events: int, args: argparse.Namespace) -> dict[str, Any]:
    config = SyntheticConfig(
        users=args.users,
        events=events,
        days=14.0,
        pre_days=7.0,
        chunk_users=args.chunk_users,
    )
    with scratch_database(server) as url:
        today = dt.datetime.now(dt.UTC).date()
        maintain_partitions(
            libpq_conninfo(url),
            EVENT_TABLES,
            first_day=today - dt.timedelta(days=16),
            last_day=today + dt.timedelta(days=2),
        )
        started = time.perf_counter()
        with psycopg.connect(libpq_conninfo(url)) as conn:
            loaded = load_synthetic(conn, config)
            conn.commit()
        load_s = time.perf_counter() - started
        with psycopg.connect(libpq_conninfo(url), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        print(
            f"{loaded.events:,} events ({loaded.rows}) loaded in {load_s:.1f} s "
            f"({loaded.events / load_s:,.0f} rows/s)"
        )
        engine = make_engine(url, pool_size=1)
        try:
            started = time.perf_counter()
            with engine.begin() as conn:
                full = refresh_rollups(conn)
            refresh_full_s = time.perf_counter() - started
            with engine.begin() as conn:
                conn.execute(text("ANALYZE metric_rollup_daily; ANALYZE exposure_day_rollup"))
            started = time.perf_counter()
            with engine.begin() as conn:
                incremental = refresh_rollups(conn)
            refresh_incremental_s = time.perf_counter() - started
            print(
                f"refresh_rollups: full {refresh_full_s:.1f} s ({full.daily_rows:,} daily rows, "
                f"{full.exposure_day_rows:,} exposure-day rows); incremental "
                f"{refresh_incremental_s:.1f} s ({incremental.first_day} to "
                f"{incremental.last_day})"
            )
            figures: dict[str, Any] = {}
            answers: dict[str, ExperimentData] = {}
            for source in ("rollups", "raw"):
                for cuped in (False, True):
                    key = f"{source}{'_cuped' if cuped else ''}"
                    repeat = args.repeat if source == "rollups" else 1
                    seconds, answers[key] = timed(
                        lambda s=source, c=cuped: analyze(engine, s, c),  # type: ignore[misc]
                        repeat,
                    )
                    figures[f"analyze_{key}_s"] = round(seconds, 3)
                    print(f"analyze --by language from {key}: {seconds:.2f} s")
            # The same run without capping and quantiles: the baseline of the figures above.
            for cuped in (False, True):
                key = f"rollups{'_cuped' if cuped else ''}_plain"
                seconds, _ = timed(
                    lambda c=cuped: analyze(engine, "rollups", c, capped=False, quantiles=False),  # type: ignore[misc]
                    args.repeat,
                )
                figures[f"analyze_{key}_s"] = round(seconds, 3)
                print(
                    f"analyze --by language from {key} (no capping, no quantiles): {seconds:.2f} s"
                )
            agree = same_moments(answers["raw"], answers["rollups"]) and same_moments(
                answers["raw_cuped"], answers["rollups_cuped"]
            )
            print(f"raw and rollups agree on every moment: {agree}")
        finally:
            engine.dispose()
    return {
        "events": loaded.events,
        "rows": loaded.rows,
        "load_s": round(load_s, 1),
        "refresh_full_s": round(refresh_full_s, 2),
        "refresh_incremental_s": round(refresh_incremental_s, 2),
        "daily_rollup_rows": full.daily_rows,
        "exposure_day_rollup_rows": full.exposure_day_rows,
        **figures,
        "raw_equals_rollups": agree,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk-users", type=int, default=10_000)
    args = parser.parse_args()
    server = os.environ.get("CODELIFT_DATABASE_URL", DEFAULT_SERVER)
    runs = []
    for events in args.sizes:
        print(f"--- {events:,} events, {args.users:,} users")
        runs.append(run_size(server, events, args))
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "users": args.users,
        "languages": 8,
        "arms": 2,
        "runs": runs,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
