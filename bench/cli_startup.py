"""CLI start-up benchmark: how long ``codelift … --help`` takes, against a bare interpreter.

Run from the repository root: ``python -m bench.cli_startup [--runs 7]``. It runs, in fresh
processes and interleaved (so a busy neighbour slows every command alike),

1. ``python -c pass``: the interpreter alone, the floor of any command;
2. ``python -c 'import codelift.cli'``: the command line's imports, without typer's work;
3. ``codelift --help`` and the ``--help`` of several sub-commands, through the installed entry
   point, as a person types them.

Median and max wall seconds, and each median's ratio to the bare interpreter's, are printed and
written to ``bench/results/cli_startup.json``. The figures scale with the machine's load; the
ratios much less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "cli_startup.json"
ROOT = Path(__file__).resolve().parent.parent
CODELIFT = Path(sys.executable).with_name("codelift")
BASELINE = "python -c pass"
IMPORT = "import codelift.cli"
HELPS = (
    (),
    ("experiments",),
    ("experiments", "list"),
    ("analyze",),
    ("gate",),
    ("feedback",),
    ("feedback", "evaluate"),
    ("backtest",),
    ("simulate",),
    ("dashboard",),
    ("keys", "create"),
    ("db",),
)
# `codelift --help` and `codelift experiments --help` should stay under this on a 2-core machine.
TARGET_S = 1.5


def commands() -> dict[str, list[str]]:
    """Each measured command line by its name."""
    out = {
        BASELINE: [sys.executable, "-c", "pass"],
        IMPORT: [sys.executable, "-c", IMPORT],
    }
    for args in HELPS:
        out[" ".join(("codelift", *args, "--help"))] = [str(CODELIFT), *args, "--help"]
    return out


def wall_s(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="Runs of each command.")
    args = parser.parse_args()
    lines = commands()
    for argv in lines.values():  # warm the file cache and the bytecode
        wall_s(argv)
    samples: dict[str, list[float]] = {name: [] for name in lines}
    for _ in range(args.runs):
        for name, argv in lines.items():
            samples[name].append(wall_s(argv))
    baseline = statistics.median(samples[BASELINE])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, {args.runs} runs")
    figures: dict[str, dict[str, float]] = {}
    for name, seconds in samples.items():
        median = statistics.median(seconds)
        figures[name] = {
            "median_s": round(median, 3),
            "max_s": round(max(seconds), 3),
            "ratio_to_baseline": round(median / baseline, 1),
        }
        print(
            f"{name:<36} median {median:6.3f} s  max {max(seconds):6.3f} s  "
            f"×{median / baseline:5.1f}"
        )
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            # The machine is shared: figures scale with how busy it was.
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "runs": args.runs,
        "target_s": TARGET_S,
        "commands": figures,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
