"""Assignment benchmark: assignments/s in one process, and how fast a ramp reaches a service.

Run from the repository root: ``python -m bench.assignment [--requests 1000000]``. It

1. makes a scratch database (as ``bench/ingest.py`` does) and applies 20 running experiments in
   4 layers (5 disjoint traffic slices per layer, varied targeting, 2 or 3 arms, coverage 10%
   to 100%);
2. measures ``AssignmentService.assign`` in this one process, from pre-built requests:
   - warm: 10,000 users, each with a fixed org and IDE and one or two languages, served over
     and over (the gateway's steady state), with an exposure recorder attached;
   - cold: every request a user never seen before, no recorder (the cost of assignment itself);
   - cold with exposures: the same with a started exposure recorder, whose queue holds them all;
3. starts a service refreshing in the background (the default 1 s poll), ramps one experiment
   from another connection, and measures how long until an assignment shows the ramp,
   several times.

Figures are printed and written to ``bench/results/assignment.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bench.ingest import scratch_database
from core.db.connection import make_engine
from experiments.assignment.exposures import ExposureRecorder
from experiments.assignment.service import AssignmentRequest, AssignmentService
from experiments.definitions.config import ExperimentConfig, parse_config
from experiments.definitions.registry import apply_definition, ramp, registry_version
from experiments.variants import Variant

RESULTS = Path(__file__).parent / "results" / "assignment.json"
LANGUAGES = ("python", "typescript", "java", "go", "rust", "cpp", "kotlin", "ruby")
IDES = ("vscode", "intellij", "neovim")
ORGS = tuple(f"org-{number}" for number in range(50))
LAYERS = ("model", "decoding", "context", "postprocess")
DEFAULT_VARIANT = Variant(model="codelift-fim-small")
RAMPED = "model-0"
RAMP_STEPS = (0.2, 0.4, 0.6, 0.8, 1.0)

# What each layer's arms change, so experiments in different layers compose.
_LAYER_ARMS: dict[str, list[dict[str, Any]]] = {
    "model": [{}, {"model": "starcoder2-3b"}, {"model": "qwen2.5-coder-1.5b"}],
    "decoding": [{}, {"decoding": {"temperature": 0.4}}, {"decoding": {"max_tokens": 128}}],
    "context": [{}, {"context_tokens": 4096}, {"prefix_share": 0.8}],
    "postprocess": [{}, {"postprocess": {"trim": "lines"}}, {"postprocess": {"max_lines": 4}}],
}


def experiment_definitions() -> list[ExperimentConfig]:
    """20 running experiments, 5 per layer in disjoint traffic slices, targeting varied."""
    rng = random.Random(7)
    configs = []
    for layer in LAYERS:
        for slot in range(5):
            n_arms = 2 + slot % 2
            weights = [0.5, 0.5] if n_arms == 2 else [0.34, 0.33, 0.33]
            targeting: dict[str, Any] = {}
            if slot % 3 == 0:
                targeting["languages"] = {"include": sorted(rng.sample(LANGUAGES, 4))}
            if slot % 3 == 1:
                targeting["ides"] = {"exclude": ["neovim"]}
            if slot == 4:
                targeting["orgs"] = {"exclude": sorted(rng.sample(ORGS, 10))}
            configs.append(
                parse_config(
                    {
                        "key": f"{layer}-{slot}",
                        "layer": layer,
                        "traffic": (slot * 0.2, (slot + 1) * 0.2),
                        "status": "running",
                        "coverage": (0.1, 0.25, 0.5, 0.75, 1.0)[slot],
                        "targeting": targeting,
                        "arms": [
                            {"name": f"arm-{i}", "weight": weights[i], "variant": overrides}
                            for i, overrides in enumerate(_LAYER_ARMS[layer][:n_arms])
                        ],
                        "primary_metrics": ["acceptance_rate"],
                    }
                )
            )
    return configs


def warm_requests(users: int, count: int, rng: random.Random) -> list[AssignmentRequest]:
    """``count`` requests from ``users`` developers, each with a fixed org and IDE and one or
    two languages."""
    profiles = [
        (
            f"dev-{number}",
            rng.choice(ORGS),
            rng.choice(IDES),
            rng.sample(LANGUAGES, rng.choice((1, 2))),
        )
        for number in range(users)
    ]
    requests = []
    for _ in range(count):
        user, org, ide, languages = rng.choice(profiles)
        requests.append(
            AssignmentRequest(user_id=user, language=rng.choice(languages), org=org, ide=ide)
        )
    return requests


def cold_requests(count: int, rng: random.Random, prefix: str) -> list[AssignmentRequest]:
    """``count`` requests, each from a user never seen before."""
    return [
        AssignmentRequest(
            user_id=f"{prefix}-{number}",
            language=rng.choice(LANGUAGES),
            org=rng.choice(ORGS),
            ide=rng.choice(IDES),
        )
        for number in range(count)
    ]


def rate(assign: Callable[[AssignmentRequest], Any], requests: list[AssignmentRequest]) -> float:
    """Assignments per second over ``requests``."""
    started = time.perf_counter()
    for request in requests:
        assign(request)
    return len(requests) / (time.perf_counter() - started)


def measure_throughput(engine: Engine, url: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(1)
    warm = warm_requests(10_000, args.requests, rng)

    recorder = ExposureRecorder(url)
    recorder.start()
    service = AssignmentService(engine, DEFAULT_VARIANT, exposure_recorder=recorder)
    service.refresh()
    rate(service.assign, warm)  # warm-up: every (user, context) computed once, exposures queued
    warm_rates = [rate(service.assign, warm) for _ in range(args.repeats)]
    in_some_arm = sum(bool(service.assign(r).arms) for r in warm[:100_000]) / min(
        len(warm), 100_000
    )
    mean_arms = statistics.fmean(len(service.assign(r).arms) for r in warm[:100_000])
    recorder.flush(timeout_s=60)
    recorder.stop()
    warm_exposures = recorder.counts()

    cold_rates = []
    for repeat in range(args.repeats):
        service = AssignmentService(engine, DEFAULT_VARIANT)
        service.refresh()
        cold_rates.append(
            rate(service.assign, cold_requests(args.cold_requests, rng, f"cold{repeat}"))
        )

    recorder = ExposureRecorder(url, queue_size=4 * args.cold_requests)
    recorder.start()
    service = AssignmentService(engine, DEFAULT_VARIANT, exposure_recorder=recorder)
    service.refresh()
    cold_with_exposures = rate(service.assign, cold_requests(args.cold_requests, rng, "exposed"))
    flush_started = time.perf_counter()
    recorder.flush(timeout_s=120)
    flush_s = time.perf_counter() - flush_started
    recorder.stop()
    cold_exposures = recorder.counts()

    return {
        "experiments_running": len(service.snapshot.experiments),
        "warm": {
            "distinct_users": 10_000,
            "requests": len(warm),
            "assignments_per_s": statistics.median(warm_rates),
            "runs": warm_rates,
            "share_in_some_arm": in_some_arm,
            "mean_arms_per_request": mean_arms,
            "exposures_written": warm_exposures.written,
            "exposures_dropped": warm_exposures.dropped,
        },
        "cold": {
            "requests": args.cold_requests,
            "assignments_per_s": statistics.median(cold_rates),
            "runs": cold_rates,
        },
        "cold_with_exposures": {
            "requests": args.cold_requests,
            "assignments_per_s": cold_with_exposures,
            "exposures_queued": cold_exposures.queued,
            "exposures_written": cold_exposures.written,
            "exposures_dropped": cold_exposures.dropped,
            "flush_s_after_run": flush_s,
        },
    }


def measure_ramp_delay(engine: Engine, url: str) -> dict[str, Any]:
    """Seconds from a ramp's commit (in another connection) to a running service serving it."""
    service = AssignmentService(engine, DEFAULT_VARIANT)
    service.start()
    admin = make_engine(url, pool_size=1)
    # For each step, a user in RAMPED's slice whose position only the new coverage takes in.
    ramped = next(e for e in service.snapshot.experiments if e.key == RAMPED)
    language = (ramped.targeting.languages.include or LANGUAGES)[0]
    probes: dict[float, AssignmentRequest] = {}
    probe_rng = random.Random(3)
    for coverage in RAMP_STEPS:
        while coverage not in probes:
            user_id = f"probe-{probe_rng.getrandbits(48):x}"
            layer_position = ramped.hash_fn(ramped.layer_seed, user_id)
            position = ramped.hash_fn(ramped.seed, user_id)
            # Two arms: arm-0 owns [0, coverage / 2); the probe is in its newly added part.
            if (
                ramped.traffic_low <= layer_position < ramped.traffic_high
                and (coverage - 0.2) / 2 <= position < coverage / 2
            ):
                probes[coverage] = AssignmentRequest(
                    user_id=user_id, language=language, org="org-1", ide="vscode"
                )

    def in_ramped(request: AssignmentRequest) -> bool:
        return any(arm.experiment == RAMPED for arm in service.assign(request).arms)

    delays = []
    reload_ms = []
    try:
        with Session(admin) as session:
            ramp(session, key=RAMPED, coverage=0.0, actor="bench", reason="reset")
            session.commit()
        time.sleep(1.5 * service.refresh_interval_s + 0.5)
        for coverage in RAMP_STEPS:
            probe = probes[coverage]
            assert not in_ramped(probe)
            with Session(admin) as session:
                ramp(session, key=RAMPED, coverage=coverage, actor="bench", reason="bench ramp")
                session.commit()
            committed = time.perf_counter()
            deadline = committed + 10.0
            while time.perf_counter() < deadline:
                if in_ramped(probe):
                    break
                time.sleep(0.001)
            else:
                raise RuntimeError(f"ramp to {coverage} not seen in 10 s")
            delays.append(time.perf_counter() - committed)
            # Spread the commits over the poll period rather than in step with it.
            time.sleep(random.Random(int(coverage * 100)).uniform(0.1, 0.9))
        # How long the reload itself takes, outside the poll wait.
        with Session(admin) as session:
            version = registry_version(session)
        for _ in range(5):
            probe_service = AssignmentService(engine, DEFAULT_VARIANT)
            started = time.perf_counter()
            probe_service.refresh()
            reload_ms.append(1000 * (time.perf_counter() - started))
            assert probe_service.snapshot.version == version
    finally:
        service.stop()
        admin.dispose()
    return {
        "refresh_interval_s": service.refresh_interval_s,
        "ramps": list(RAMP_STEPS),
        "delays_s": delays,
        "max_delay_s": max(delays),
        "mean_delay_s": statistics.fmean(delays),
        "snapshot_load_ms_median": statistics.median(reload_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000, help="warm requests per run")
    parser.add_argument("--cold-requests", type=int, default=100_000, help="cold requests per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median kept)")
    args = parser.parse_args()
    server = os.environ.get("CODELIFT_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")

    with scratch_database(server) as url:
        engine = make_engine(url, pool_size=2)
        try:
            with Session(engine) as session:
                for config in experiment_definitions():
                    apply_definition(session, config=config, actor="bench")
                session.commit()
            throughput = measure_throughput(engine, url, args)
            refresh = measure_ramp_delay(engine, url)
        finally:
            engine.dispose()

    results = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "experiments": {"running": throughput.pop("experiments_running"), "layers": len(LAYERS)},
        **throughput,
        "refresh_after_ramp": refresh,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    warm, cold, exposed = results["warm"], results["cold"], results["cold_with_exposures"]
    print(
        f"assignment, one process, {results['experiments']['running']} running experiments "
        f"in {len(LAYERS)} layers"
    )
    print(
        f"  warm ({warm['distinct_users']:,} users, repeated): "
        f"{warm['assignments_per_s']:,.0f} assignments/s "
        f"({warm['mean_arms_per_request']:.2f} arms per request, "
        f"{warm['share_in_some_arm']:.0%} of requests in some arm)"
    )
    print(f"  cold (every user new):          {cold['assignments_per_s']:,.0f} assignments/s")
    print(
        f"  cold, recording exposures:      {exposed['assignments_per_s']:,.0f} assignments/s "
        f"({exposed['exposures_written']:,} exposures written, "
        f"{exposed['exposures_dropped']} dropped, flushed {exposed['flush_s_after_run']:.1f} s "
        "after the run)"
    )
    delays = ", ".join(f"{delay:.2f}" for delay in refresh["delays_s"])
    print(
        f"ramp seen by a running service (poll every {refresh['refresh_interval_s']:g} s): "
        f"max {refresh['max_delay_s']:.2f} s, mean {refresh['mean_delay_s']:.2f} s ({delays}); "
        f"snapshot reload {refresh['snapshot_load_ms_median']:.1f} ms"
    )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
