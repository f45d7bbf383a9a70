"""Dashboard benchmark: how long each page takes to load with 1M events in the database.

Run from the repository root: ``python -m bench.dashboard [--events 1000000]``. It

1. makes a scratch database (as ``bench/ingest.py`` does) and seeds it with the dashboard's demo
   data (``simulator.dashboard_seed``: three experiments, ``--events`` events, developer
   comments), then
   ANALYZE;
2. renders every page with Streamlit's AppTest, logged in, twice: with empty caches (every
   query runs: the first visitor after the TTL) and again (the cached figures);
3. also times the data-layer calls behind each page on their own (no Streamlit).

Figures are printed and written to ``bench/results/dashboard.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from streamlit import logger as streamlit_logger
from streamlit.testing.v1 import AppTest

from bench.ingest import scratch_database
from core.db.connection import libpq_conninfo, make_engine
from dashboard import cached, data, feedback_data
from dashboard.apptest import app_with_passwords
from simulator.dashboard_seed import seed_demo

RESULTS = Path(__file__).parent / "results" / "dashboard.json"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
PAGES = ("overview", "experiments", "feedback", "serving")
PASSWORD = "bench-viewer-password"


def render_s(url: str, page: str) -> float:
    """Seconds to render ``page`` once logged in (the run that draws the page)."""
    app = AppTest.from_function(
        app_with_passwords, args=(url, page, PASSWORD, PASSWORD + "-admin"), default_timeout=300
    )
    app.run()
    app.text_input(key="login_password").input(PASSWORD)
    app.button[0].click()
    started = time.perf_counter()
    app.run()
    seconds = time.perf_counter() - started
    if app.exception:
        raise RuntimeError(f"{page}: {[e.value for e in app.exception]}")
    return seconds


def timed(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def data_layer_s(url: str) -> dict[str, float]:
    """Seconds of the data-layer calls behind each page, uncached."""
    engine = make_engine(url, pool_size=1)
    try:
        options = data.filter_options(engine)
        assert options.first_day is not None and options.last_day is not None
        first, last = max(options.first_day, options.last_day - dt.timedelta(14)), options.last_day
        end = dt.datetime.now(dt.UTC)
        start = end - dt.timedelta(days=7)
        return {
            "overview": timed(
                lambda: data.overview_frames(engine, first=first, last=last, grain="day")
            ),
            "overview_ide_filter_raw": timed(
                lambda: data.overview_frames(
                    engine, first=first, last=last, grain="day", ides=("vscode",)
                )
            ),
            "experiments_list": timed(lambda: data.experiments_frame(engine)),
            "experiment_detail": timed(lambda: data.experiment_detail(engine, "context-window")),
            "sequential_history": timed(lambda: data.history_frame(engine, "context-window")),
            "feedback_counts": timed(
                lambda: feedback_data.feedback_counts(
                    engine, experiment_key="context-window", start=start, end=end
                )
            ),
            "feedback_comments": timed(
                lambda: feedback_data.comments_frame(
                    engine,
                    text_query="slow",
                    theme_ids=(),
                    polarity=None,
                    language=None,
                    experiment_key=None,
                )
            ),
            "serving": timed(
                lambda: data.serving_frame(
                    engine, key="context-window", start=start, end=end, grain="hour"
                )
            ),
        }
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=25_000)
    args = parser.parse_args()
    # Outside a server Streamlit warns at every cached call that it has no runtime.
    streamlit_logger.set_log_level("error")
    server = os.environ.get("CODELIFT_DATABASE_URL", DEFAULT_SERVER)
    with scratch_database(server) as url:
        engine = make_engine(url, pool_size=1)
        started = time.perf_counter()
        summary = seed_demo(engine, events=args.events, users=args.users)
        seed_s = time.perf_counter() - started
        engine.dispose()
        with psycopg.connect(libpq_conninfo(url), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        print(f"seeded {summary.events:,} events, {summary.feedback:,} comments in {seed_s:.1f} s")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        pages: dict[str, dict[str, float]] = {}
        for page in PAGES:
            cached.clear()
            cold = render_s(url, page)
            warm = render_s(url, page)
            pages[page] = {"cold_s": round(cold, 3), "warm_s": round(warm, 3)}
            print(f"{page:<12} cold {cold:.2f} s, cached {warm:.2f} s")
        layer = {name: round(seconds, 3) for name, seconds in data_layer_s(url).items()}
        for name, seconds in layer.items():
            print(f"  data layer {name:<24} {seconds:.3f} s")
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            # The machine is shared: figures scale with how busy it was.
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "events": summary.events,
        "feedback_comments": summary.feedback,
        "users": args.users,
        "seed_s": round(seed_s, 1),
        "pages": pages,
        "data_layer_s": layer,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
