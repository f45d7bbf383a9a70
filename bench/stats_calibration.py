"""Seeded A/A simulations on heavy-tailed fleets: false positives, CI coverage, low-power cut.

Run from the repository root: ``python -m bench.stats_calibration [--experiments 2000]``. Users
come from ``simulator.heavy_tails`` (Gamma-Poisson activity, Beta propensities, clustered by
user). For each size (users per arm) and each simulated primary metric it runs ``compare`` on
A/A experiments three ways: as gbstats does (no capping), capped (the catalog's default p99 of
each user's contribution) with the small-sample correction, and that again with the low-power
rule; it prints the false-positive rate and the coverage of the 95 % CI of the relative lift
(with a true +5 % acceptance effect, coverage of that truth too), then the false-positive
rate by effective users per arm, which is where ``MIN_EFFECTIVE_USERS`` comes from.

Figures are printed and written to ``bench/results/stats_calibration.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from experiments.analysis.analyze import MIN_EFFECTIVE_USERS
from experiments.definitions.capping import DEFAULT_CAPPING
from simulator.heavy_tails import SIMULATED_METRICS, rates, simulate_comparisons

RESULTS = Path(__file__).parent / "results" / "stats_calibration.json"
SEED = 20261201
EDGES = (0, 10, 15, 20, 25, 30, 40, 60, 100, 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=2000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200, 1000])
    parser.add_argument(
        "--percentile", type=float, default=DEFAULT_CAPPING.percentile, help="The cap to try."
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    percentile = args.percentile
    runs: list[dict[str, Any]] = []
    by_effective: dict[str, list[list[float]]] = {m: [] for m in SIMULATED_METRICS}
    for index, users in enumerate(args.sizes):
        plain = simulate_comparisons(users, args.experiments, None, SEED + index)
        robust = simulate_comparisons(users, args.experiments, percentile, SEED + index)
        effect = simulate_comparisons(
            users, args.experiments, percentile, SEED + 100 + index, lift=0.05
        )
        entry = {
            "users_per_arm": users,
            "uncapped": rates(plain),
            "capped": rates(robust),
            "capped_with_low_power_rule": rates(robust, MIN_EFFECTIVE_USERS),
            "capped_effect_5pct": rates(effect, MIN_EFFECTIVE_USERS),
        }
        runs.append(entry)
        print(f"\n{users} users per arm, {args.experiments} experiments each")
        for label in ("uncapped", "capped", "capped_with_low_power_rule", "capped_effect_5pct"):
            for metric, row in entry[label].items():
                print(
                    f"  {label:<28} {metric:<22} false positives {row['rejection_rate']:.3f}  "
                    f"coverage {row['coverage']:.3f}  judged {row['judged_share']:.2f}  "
                    f"effective users {row['median_effective_users']:g}"
                )
        for metric, rows in robust.items():
            by_effective[metric] += [
                [e, float(r)] for e, r in zip(rows["effective"], rows["reject"], strict=True)
            ]
    print("\nfalse positives by effective users per arm (capped, small-sample corrected):")
    bins: dict[str, list[dict[str, float]]] = {}
    for metric, pairs in by_effective.items():
        values = np.asarray(pairs)
        bins[metric] = []
        for low, high in zip(EDGES, EDGES[1:], strict=False):
            inside = (values[:, 0] >= low) & (values[:, 0] < high)
            if inside.sum() < 200:
                continue
            rate = float(values[inside, 1].mean())
            bins[metric].append({"from": low, "to": high, "rows": int(inside.sum()), "rate": rate})
            print(f"  {metric:<22} [{low:g}, {high:g}): {rate:.3f} of {int(inside.sum())} rows")
    args.results.parent.mkdir(exist_ok=True)
    args.results.write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "seed": SEED,
                "cap_percentile": percentile,
                "min_effective_users": MIN_EFFECTIVE_USERS,
                "runs": runs,
                "false_positives_by_effective_users": bins,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten to {args.results}")


if __name__ == "__main__":
    main()
