"""Product metrics over time, serving per arm and the sequential history (the dashboard's
figures): the rollups and the raw events agree, filters partition the data, and the history's
last look is the analysis itself."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Connection, text

from experiments.analysis.analyze import analyze_experiment
from experiments.analysis.history import MAX_LOOKS, look_days, sequential_history
from experiments.analysis.metrics_sql import load_experiment_data
from experiments.analysis.moments_sql import components_of, moment_aggregates
from experiments.analysis.rollups import refresh_rollups
from experiments.analysis.stats import Comparison
from experiments.definitions.config import parse_config
from experiments.product.metrics import ProductMetrics, product_metrics, product_overview
from experiments.product.serving_health import serving_by_arm
from simulator.synthetic import SyntheticConfig, load_synthetic

EXPERIMENT = "dash"
IDES = ("vscode", "jetbrains", "neovim")
END = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
CONFIG = SyntheticConfig(
    experiment=EXPERIMENT,
    users=200,
    events=8_000,
    days=4.0,
    pre_days=1.0,
    end=END,
    ides=IDES,
    feedback_share=0.05,
)


@pytest.fixture
def synthetic(conn: Connection) -> Connection:
    """~8,000 synthetic events of 200 users over 4 days, in three IDEs, rolled up."""
    driver = conn.connection.driver_connection
    assert driver is not None
    load_synthetic(driver, CONFIG)
    refresh_rollups(conn)
    return conn


def days() -> tuple[dt.date, dt.date]:
    return (END - dt.timedelta(days=4)).date(), END.date()


def assert_same(a: list[ProductMetrics], b: list[ProductMetrics]) -> None:
    assert [(m.period, m.language) for m in a] == [(m.period, m.language) for m in b]
    for x, y in zip(a, b, strict=True):
        left, right = dataclasses.asdict(x), dataclasses.asdict(y)
        assert left.pop("latency_mean_ms") == pytest.approx(right.pop("latency_mean_ms"))
        assert left == right


@pytest.mark.parametrize(("grain", "by_language"), [("day", False), ("week", True), (None, True)])
def test_rollups_and_raw_events_give_the_same_figures(
    synthetic: Connection, grain: Any, by_language: bool
) -> None:
    first, last = days()
    options = {"first": first, "last": last, "grain": grain, "by_language": by_language}
    rollups = product_metrics(synthetic, source="rollups", **options)
    raw = product_metrics(synthetic, source="raw", **options)
    assert rollups
    assert_same(rollups, raw)


@pytest.mark.parametrize("ides", [(), ("neovim",)])
def test_the_overview_gives_the_three_views_in_one_pass(
    synthetic: Connection, ides: tuple[str, ...]
) -> None:
    first, last = days()
    options: dict[str, Any] = {"first": first, "last": last, "ides": ides}
    overview = product_overview(synthetic, grain="week", **options)
    assert overview.total is not None
    assert_same([overview.total], product_metrics(synthetic, grain=None, **options))
    assert_same(overview.series, product_metrics(synthetic, grain="week", **options))
    assert_same(
        overview.by_language,
        product_metrics(synthetic, grain=None, by_language=True, **options),
    )


def test_figures_follow_the_definitions(synthetic: Connection) -> None:
    first, last = days()
    (total,) = product_metrics(synthetic, first=first, last=last, grain=None)
    served = synthetic.execute(text("SELECT count(*), count(error) FROM completion_served")).one()
    assert total.suggestions_served == served[0]
    assert total.error_rate == pytest.approx(served[1] / served[0])
    assert total.active_users == CONFIG.users - _inactive(synthetic)
    assert 0 < total.acceptance_rate < 1  # type: ignore[operator]
    assert total.suggestions_accepted == pytest.approx(
        total.acceptance_rate * total.suggestions_shown  # type: ignore[operator]
    )
    assert total.latency_p50_ms < total.latency_p95_ms  # type: ignore[operator]
    assert set(total.cpr) == {30, 120, 300, 600}


def _inactive(conn: Connection) -> int:
    active = conn.execute(text("SELECT count(DISTINCT user_id) FROM completion_served")).scalar()
    return CONFIG.users - int(active or 0)


def test_ide_and_language_filters_partition_the_data(synthetic: Connection) -> None:
    first, last = days()
    (total,) = product_metrics(synthetic, first=first, last=last, grain=None)
    per_ide = [
        product_metrics(synthetic, first=first, last=last, grain=None, ides=(ide,))[0]
        for ide in IDES
    ]
    # Each user works in one IDE, so the IDEs split users and suggestions exactly.
    assert sum(m.suggestions_served for m in per_ide) == total.suggestions_served
    assert sum(m.active_users for m in per_ide) == total.active_users
    by_language = product_metrics(synthetic, first=first, last=last, grain=None, by_language=True)
    (python,) = product_metrics(
        synthetic, first=first, last=last, grain=None, languages=("python",)
    )
    row = next(m for m in by_language if m.language == "python")
    assert_same([dataclasses.replace(row, language=None)], [python])
    assert sum(m.suggestions_shown for m in by_language) == total.suggestions_shown


def test_bad_arguments_are_refused(synthetic: Connection) -> None:
    first, last = days()
    with pytest.raises(ValueError, match="grain"):
        product_metrics(synthetic, first=first, last=last, grain="month")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="before first"):
        product_metrics(synthetic, first=last, last=first)
    with pytest.raises(ValueError, match="ides"):
        product_metrics(synthetic, first=first, last=last, ides=("vscode",), source="rollups")


def test_serving_per_arm_counts_every_request_of_the_experiment(synthetic: Connection) -> None:
    points = serving_by_arm(
        synthetic, experiment=EXPERIMENT, start=END - dt.timedelta(days=5), end=END, grain="day"
    )
    counted = synthetic.execute(
        text(
            "SELECT arms ->> :e AS arm, count(*) AS n, count(error) AS errors "
            "FROM completion_served GROUP BY 1"
        ),
        {"e": EXPERIMENT},
    ).all()
    for arm, n, errors in counted:
        mine = [p for p in points if p.arm == arm]
        assert sum(p.requests for p in mine) == n
        assert sum(p.errors for p in mine) == errors
    assert all(p.latency_p50_ms <= p.latency_p95_ms for p in points)
    hourly = serving_by_arm(
        synthetic, experiment=EXPERIMENT, start=END - dt.timedelta(days=5), end=END
    )
    assert sum(p.requests for p in hourly) == sum(p.requests for p in points)
    assert not serving_by_arm(
        synthetic, experiment="other", start=END - dt.timedelta(days=5), end=END
    )
    with pytest.raises(ValueError, match="end"):
        serving_by_arm(synthetic, experiment=EXPERIMENT, start=END, end=END)


def assert_close(a: Comparison, b: Comparison) -> None:
    """Equal codes and counts; floats equal to rounding (sums are added in another order)."""
    left, right = a.to_dict(), b.to_dict()
    assert left.keys() == right.keys()
    for key, value in left.items():
        if isinstance(value, float | list):
            assert value == pytest.approx(right[key], rel=1e-9), key
        else:
            assert value == right[key], key


def test_the_history_ends_with_the_full_analysis(synthetic: Connection) -> None:
    config = parse_config(
        {
            "key": EXPERIMENT,
            "arms": [{"name": "control", "weight": 0.5}, {"name": "treatment", "weight": 0.5}],
            "primary_metrics": ["acceptance_rate"],
        }
    )
    first_exposure, last_event = synthetic.execute(
        text("SELECT min(client_ts), max(client_ts) FROM exposure")
    ).one()
    looks = look_days(first_exposure, last_event)
    points = sequential_history(synthetic, config, days=looks)
    assert [p.as_of for p in points] == looks
    assert [p.users for p in points] == sorted(p.users for p in points)
    # Each look is the analysis as it stood then; the last one sees everything.
    for point in points:
        then = analyze_experiment(synthetic, config, until=point.as_of)
        (same,) = [r for r in then.results if r.metric == "acceptance_rate" and not r.language]
        assert point.users == then.users_per_arm["treatment"]
        assert_close(point.comparison, same.comparison)
    full = analyze_experiment(synthetic, config)
    last = full.results[[r.metric for r in full.results].index("acceptance_rate")]
    assert_close(points[-1].comparison, last.comparison)
    # The first look sees only the first exposure day.
    assert points[0].users < points[-1].users


def test_until_cuts_rollups_and_raw_events_alike(synthetic: Connection) -> None:
    until = (END - dt.timedelta(days=1)).date()
    loads = {
        source: load_experiment_data(
            synthetic, experiment=EXPERIMENT, source=source, by_language=True, until=until
        )
        for source in ("raw", "rollups")
    }
    raw, rollups = loads["raw"], loads["rollups"]
    everything = load_experiment_data(synthetic, experiment=EXPERIMENT)
    assert raw.users_per_arm == rollups.users_per_arm
    assert sum(raw.users_per_arm.values()) < sum(everything.users_per_arm.values())
    assert raw.last_event is not None and raw.last_event < dt.datetime.combine(
        until, dt.time(), dt.UTC
    )
    for a, b in zip(raw.metrics, rollups.metrics, strict=True):
        assert (a.metric, a.arm, a.language) == (b.metric, b.arm, b.language)
        assert dataclasses.astuple(a.moments) == pytest.approx(dataclasses.astuple(b.moments))


def test_look_days_are_thinned() -> None:
    start = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    assert look_days(start, start) == [dt.date(2026, 1, 2)]
    many = look_days(start, start + dt.timedelta(days=60))
    assert len(many) == MAX_LOOKS
    assert many[0] == dt.date(2026, 1, 2) and many[-1] == dt.date(2026, 3, 3)


def test_synthetic_extras_leave_the_defaults_alone(conn: Connection) -> None:
    driver = conn.connection.driver_connection
    assert driver is not None
    small = SyntheticConfig(users=30, events=600, days=2.0, pre_days=0.5, end=END)
    load_synthetic(driver, small)
    assert conn.execute(text("SELECT array_agg(DISTINCT ide) FROM completion_served")).scalar() == [
        "vscode"
    ]
    assert conn.execute(text("SELECT count(*) FROM feedback")).scalar() == 0
    load_synthetic(
        driver,
        dataclasses.replace(small, experiment="second", id_offset=5000, feedback_share=0.2, seed=2),
    )
    users = conn.execute(text("SELECT DISTINCT user_id FROM exposure WHERE experiment = 'second'"))
    assert all(int(u, 16) >= 5000 for (u,) in ((row[0][1:],) for row in users))
    assert conn.execute(text("SELECT count(*) FROM feedback WHERE text IS NOT NULL")).scalar()


def test_a_history_carries_only_the_components_its_metrics_need() -> None:
    assert components_of(["acceptance_rate"]) == ("shown_n", "accepted_n", "served_n")
    assert components_of(["pct_code_written"]) == (
        "shown_n",
        "typed_chars",
        "ai_chars",
        "served_n",
    )
    with pytest.raises(ValueError, match="unknown \\['nope'\\]"):
        moment_aggregates(cuped=False, metrics=["nope"])
