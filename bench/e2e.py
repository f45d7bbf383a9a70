"""End to end under load: the fleet in full-stack mode at increasing numbers of developers.

Starts the collector and the gateway (local engine) as child processes on a scratch database
(on the server of CODELIFT_DATABASE_URL, default the local one), puts the demo experiment at
full coverage, and for each fleet size simulates one day: every developer can have one
completion in flight. Prints, per size, completions/s, events/s (the IDE's events plus the
gateway's completion_served), gateway latency p50/p99 as the fleet saw it, the collector's
batch latency p99, and whether anything was lost: events sent against acknowledged against rows
stored, and completions served against completion_served rows. Writes
``bench/results/e2e.json``.

    python -m bench.e2e [--sizes 4 8 16 32]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.ingest import scratch_database
from core.db.connection import libpq_conninfo
from simulator.demo import DEFAULT_VARIANT, drive_fleet, make_keys
from simulator.direct import Timeline
from simulator.fullstack import Endpoints
from simulator.runner import ensure_partitions, register_experiment
from simulator.scenario import Scenario, load_scenario
from simulator.stack import running_stack

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "e2e.json"
SCENARIO = ROOT / "examples" / "scenarios" / "demo.yaml"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
# Completions per developer in the simulated day (sessions × suggestions per session).
SUGGESTIONS_PER_SESSION = 10


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _served_rows(url: str, prefix: str) -> int:
    with psycopg.connect(libpq_conninfo(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM completion_served WHERE user_id LIKE %s", (f"{prefix}-dev-%",)
        ).fetchone()
    return int(row[0]) if row else 0


def level(url: str, endpoints: Endpoints, base: Scenario, developers: int) -> dict[str, Any]:
    """One fleet size: a simulated day through the stack, measured."""
    fleet = base.fleet.model_copy(
        update={"developers": developers, "suggestions_per_session": SUGGESTIONS_PER_SESSION}
    )
    scenario = Scenario.model_validate(
        dict(base) | {"name": f"e2e{developers}", "fleet": fleet, "days": 1.0}
    )
    timeline = Timeline.for_scenario(scenario)
    ensure_partitions(url, timeline)
    out = io.StringIO()
    result, fleet_run = asyncio.run(
        drive_fleet(scenario, timeline, endpoints, url, out, concurrency=developers, gate=False)
    )
    spans = fleet_run.spans
    serve_s = sum(span.serve_s for span in spans)
    wall_s = sum(span.wall_s for span in spans)
    gateway_ms = [ms for span in spans for ms in span.gateway_ms]
    served_rows = _served_rows(url, scenario.name)
    events = result.events_sent + served_rows
    return {
        "developers": developers,
        "completions": result.completions,
        "gateway_errors": sum(span.errors for span in spans),
        "completions_per_s": round(
            (result.completions - sum(s.errors for s in spans)) / serve_s, 1
        ),
        "events": events,
        "events_per_s": round(events / wall_s, 1),
        "gateway_p50_ms": round(statistics.median(gateway_ms), 1),
        "gateway_p99_ms": round(_pct(gateway_ms, 0.99), 1),
        "collector_batch_p99_ms": round(_pct(result.collector_batch_ms, 0.99), 1),
        "events_sent": result.events_sent,
        "events_acknowledged": result.events_acknowledged,
        "events_stored": result.events_stored,
        "completion_served_rows": served_rows,
        "gateway_error_kinds": fleet_run.gateway_errors,
        "lost": (result.events_sent - result.events_stored) + (result.completions - served_rows),
    }


def main() -> None:
    """Run every size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32])
    args = parser.parse_args()
    server = os.environ.get("CODELIFT_DATABASE_URL", DEFAULT_SERVER)
    base = load_scenario(SCENARIO)
    base = Scenario.model_validate(
        dict(base) | {"experiment": base.experiment.model_copy(update={"coverage": 1.0})}
    )
    rows: list[dict[str, Any]] = []
    with scratch_database(server) as url:
        ingest_key, serve_key = make_keys(url)
        with running_stack(
            database_url=url,
            ingest_key=ingest_key,
            default_variant=DEFAULT_VARIANT,
            log_dir=ROOT / ".codelift" / "logs",
        ) as (collector_url, gateway_url):
            register_experiment(url, base.experiment, actor="bench")
            time.sleep(1.5)
            endpoints = Endpoints(gateway_url, serve_key, collector_url, ingest_key)
            for developers in args.sizes:
                rows.append(level(url, endpoints, base, developers))
                print(json.dumps(rows[-1]), flush=True)
    header = (
        f"{'devs':>5} {'compl/s':>8} {'events/s':>9} {'gw p50':>7} {'gw p99':>7} "
        f"{'coll p99':>9} {'errors':>7} {'sent':>7} {'stored':>7} {'lost':>5}"
    )
    print(header)
    for row in rows:
        print(
            f"{row['developers']:>5} {row['completions_per_s']:>8} {row['events_per_s']:>9} "
            f"{row['gateway_p50_ms']:>7} {row['gateway_p99_ms']:>7} "
            f"{row['collector_batch_p99_ms']:>9} {row['gateway_errors']:>7} "
            f"{row['events_sent']:>7} {row['events_stored']:>7} {row['lost']:>5}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"machine": platform.platform(), "cpus": os.cpu_count(), "levels": rows}, indent=2
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
