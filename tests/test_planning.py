"""Experiment planning: growth of unique users, MDEs against a hand computation, days to a target
MDE, ``codelift plan`` on a key and on a file, and the warning of ``experiments apply``.

Most tests load ``metric_rollup_daily`` rows by hand (a small fleet whose per-user values are
known), so the expected figures are computed here from the rows themselves, not from the SQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Connection, Engine, delete, insert, text

from experiments.analysis.planning import plan_experiment, plan_from_pre_period, steps_of
from experiments.analysis.planning_model import (
    Growth,
    exposed,
    growth_from_gaps,
    log_slope,
    power_at,
    users_seen,
)
from experiments.analysis.planning_progress import power_progress
from experiments.analysis.planning_sql import load_pre_period
from experiments.analysis.rollup_models import MetricRollupDaily
from experiments.analysis.rollups import refresh_rollups
from experiments.analysis.stats.results import Comparison, ResultCode
from experiments.definitions.config import ExperimentConfig, parse_config
from experiments.definitions.status import Status
from simulator.synthetic import SyntheticConfig, load_synthetic
from tests.database import PgConnection
from tests.experiment_factories import CommittedRegistry
from tests.test_cli import run

TODAY = dt.date(2026, 3, 20)
DAYS = 4
USERS = 40
PREFIX = "plan-test-"
# z_{1 − 0.0125} (α 0.05 over 2 primary metrics, two-sided) and z_{0.8}, from tables.
Z_ALPHA_0025 = 2.241402727604947
Z_POWER_08 = 0.8416212335729143

# --- the hand-made fleet ------------------------------------------------------------------------


def _language(user: int) -> str:
    return "go" if user % 4 == 0 else "python"


def _active(user: int, day: int) -> bool:
    return (user + day) % 3 != 0


def _day_values(user: int, day: int) -> dict[str, int]:
    """One active day's components; every metric the tests plan is made of these."""
    shown = 3 + (user * day) % 5
    return {
        "served_n": 5 + user % 7,
        "shown_n": shown,
        "accepted_n": (user + day) % 4,
    }


def fleet_rows(today: dt.date, prefix: str = PREFIX) -> list[dict[str, Any]]:
    """Rollup rows of USERS users over the DAYS whole days before ``today``."""
    first = today - dt.timedelta(days=DAYS)
    rows = []
    for user in range(USERS):
        for day in range(DAYS):
            if not _active(user, day):
                continue
            values: dict[str, Any] = dict.fromkeys(MetricRollupDaily.__table__.columns.keys(), 0)
            values |= _day_values(user, day)
            values |= {
                "day": first + dt.timedelta(days=day),
                "user_id": f"{prefix}{user:03d}",
                "language": _language(user),
                "latency_buckets": [],
                "latency_counts": [],
                "last_ts": dt.datetime.combine(first, dt.time(12), dt.UTC) + dt.timedelta(days=day),
            }
            rows.append(values)
    return rows


def load_fleet(conn: Connection, today: dt.date = TODAY) -> None:
    conn.execute(insert(MetricRollupDaily), fleet_rows(today))


def totals(language: str | None = None) -> list[dict[str, int]]:
    """Each user's components summed over the window (users of ``language`` only)."""
    out = []
    for user in range(USERS):
        if language is not None and _language(user) != language:
            continue
        days = [_day_values(user, day) for day in range(DAYS) if _active(user, day)]
        out.append({name: sum(d[name] for d in days) for name in days[0]})
    return out


def brute_force_growth(active: list[set[int]], days: int) -> list[float]:
    """U(L): distinct users over every L-day stretch, averaged, by enumeration."""
    out = []
    for length in range(1, days + 1):
        starts = range(days - length + 1)
        seen = [sum(1 for a in active if a & set(range(s, s + length))) for s in starts]
        out.append(sum(seen) / len(seen))
    return out


def config(**fields: Any) -> ExperimentConfig:
    data: dict[str, Any] = {
        "key": "plan-test",
        "arms": [{"name": "control", "weight": 0.5}, {"name": "treatment", "weight": 0.5}],
        "primary_metrics": ["acceptance_rate", "suggestions_per_user"],
        "capping": {"acceptance_rate": "off", "suggestions_per_user": "off"},
        "plan": {"duration_s": f"{DAYS}d"},
    }
    data |= fields
    return parse_config(data)


def mean_and_variance(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, sum(v * v for v in values) / len(values) - mean * mean


# --- growth and exposure (pure) -----------------------------------------------------------------


def test_users_seen_from_inactive_runs_equals_enumeration() -> None:
    rng = random.Random(7)
    days = 12
    active = [{d for d in range(days) if rng.random() < p} for p in (0.05, 0.2, 0.5, 0.9) * 15]
    active = [a for a in active if a]
    gaps: dict[int, int] = {}
    for days_on in active:
        marks = [-1, *sorted(days_on), days]
        for before, after in zip(marks, marks[1:], strict=False):
            if after - before - 1 > 0:
                gaps[after - before - 1] = gaps.get(after - before - 1, 0) + 1
    assert users_seen(len(active), gaps, days) == pytest.approx(
        brute_force_growth(active, days), abs=1e-9
    )


def test_growth_extrapolates_a_log_curve_exactly_and_interpolates_within() -> None:
    observed = tuple(100 + 40 * math.log(length) for length in range(1, 15))
    assert log_slope(observed) == pytest.approx(40.0, abs=1e-9)
    growth = Growth(observed=observed, slope=log_slope(observed))
    assert growth.at(60) == pytest.approx(100 + 40 * math.log(60), abs=1e-6)
    assert growth.at(3.5) == pytest.approx((observed[2] + observed[3]) / 2, abs=1e-9)
    assert growth.at(0.25) == pytest.approx(observed[0] / 4, abs=1e-9)
    assert growth.at(0) == 0.0
    # A closed team, all seen early: no growth beyond the window (never a negative slope).
    assert log_slope((50.0, 60.0, 60.0, 60.0, 60.0, 60.0)) == 0.0
    assert growth_from_gaps(10, {}, 1).slope == 0.0


def test_exposure_follows_the_stages() -> None:
    staged = config(
        traffic=(0.0, 0.5),
        rollout={
            "stages": [
                {"coverage": 0.2, "min_duration_s": "1d"},
                {"coverage": 0.5, "min_duration_s": "1d"},
                {"coverage": 1.0},
            ]
        },
    )
    steps = steps_of(staged)
    assert [s.start_days for s in steps] == [0.0, 1.0, 2.0]
    assert [s.added for s in steps] == pytest.approx([0.1, 0.15, 0.25], abs=1e-12)
    growth = Growth(observed=tuple(float(10 * d) for d in range(1, 15)), slope=0.0)
    # A user is exposed once they show up while coverage covers their bucket.
    assert exposed(growth, steps, 14) == pytest.approx(0.1 * 140 + 0.15 * 130 + 0.25 * 120)
    # Without stages: the coverage (traffic slice included) from the start.
    assert exposed(growth, steps_of(config(coverage=0.4)), 5) == pytest.approx(0.4 * 50)


# --- the plan on hand-made rollups --------------------------------------------------------------


def test_pre_period_growth_matches_the_rows(conn: Connection) -> None:
    load_fleet(conn)
    plain = config()
    pre = load_pre_period(
        conn,
        first_day=TODAY - dt.timedelta(days=28),
        stop_day=TODAY,
        languages=plain.targeting.languages,
        metrics=["acceptance_rate"],
        caps={},
    )
    assert pre is not None
    # Trimmed to the days with data.
    assert (pre.first_day, pre.days) == (TODAY - dt.timedelta(days=DAYS), DAYS)
    assert pre.languages == ["python", "go"]
    for language in (None, "go"):
        active = [
            {d for d in range(DAYS) if _active(u, d)}
            for u in range(USERS)
            if language is None or _language(u) == language
        ]
        group = pre.growth[language]
        assert group.users == len(active)
        assert users_seen(group.users, group.gaps, DAYS) == pytest.approx(
            brute_force_growth(active, DAYS), abs=1e-9
        )


def test_mde_matches_a_hand_computation(conn: Connection) -> None:
    load_fleet(conn)
    plan = plan_experiment(conn, config(), today=TODAY, min_effective_users=0.0)
    assert plan.window == (TODAY - dt.timedelta(days=DAYS), TODAY - dt.timedelta(days=1))
    assert plan.overall_alpha == pytest.approx(0.025)
    assert plan.language_alpha == pytest.approx(0.0125)
    assert plan.exposed_users == pytest.approx(USERS)

    # suggestions_per_user: the mean of each user's shown suggestions over the plan's 4 days.
    shown = [float(t["shown_n"]) for t in totals()]
    mean, variance = mean_and_variance(shown)
    row = plan.row("suggestions_per_user")
    assert row is not None and row.code is ResultCode.OK
    assert row.users_per_arm == {"control": 20.0, "treatment": 20.0}
    assert row.baseline == pytest.approx(mean, abs=1e-9)
    assert row.sd == pytest.approx(math.sqrt(variance), abs=1e-9)
    expected = (Z_ALPHA_0025 + Z_POWER_08) * math.sqrt(variance * (1 / 20 + 1 / 20)) / mean
    assert row.mde == pytest.approx(expected, abs=1e-9)

    # acceptance_rate in python: Σaccepted / Σshown, per-user variance by the delta method.
    python = totals("python")
    m = [float(t["accepted_n"]) for t in python]
    d = [float(t["shown_n"]) for t in python]
    mean_m, var_m = mean_and_variance(m)
    mean_d, var_d = mean_and_variance(d)
    cov = sum(a * b for a, b in zip(m, d, strict=True)) / len(m) - mean_m * mean_d
    ratio = mean_m / mean_d
    delta = (var_m - 2 * ratio * cov + ratio**2 * var_d) / mean_d**2
    half = len(python) / 2
    z_language = 2.4977054744123737  # z_{1 − 0.0125/2}
    expected = (z_language + Z_POWER_08) * math.sqrt(delta * 2 / half) / ratio
    row = plan.row("acceptance_rate", "python")
    assert row is not None and row.alpha == pytest.approx(0.0125)
    assert row.baseline == pytest.approx(ratio, abs=1e-12)
    assert row.sd == pytest.approx(math.sqrt(delta), abs=1e-12)
    assert row.mde == pytest.approx(expected, abs=1e-9)
    # The table's order: every metric, all languages first, then by users.
    assert [(r.metric, r.language) for r in plan.rows] == [
        (metric, language)
        for metric in ("acceptance_rate", "suggestions_per_user")
        for language in (None, "python", "go")
    ]


def test_a_longer_plan_extrapolates_users_and_each_users_rate(
    conn: Connection,
) -> None:
    load_fleet(conn)
    short = plan_experiment(conn, config(), today=TODAY, min_effective_users=0.0)
    longer = plan_experiment(
        conn, config(plan={"duration_s": "8d"}), today=TODAY, min_effective_users=0.0
    )
    active = [{d for d in range(DAYS) if _active(u, d)} for u in range(USERS)]
    observed = brute_force_growth(active, DAYS)
    users = observed[-1] + log_slope(observed) * math.log(8 / DAYS)
    assert longer.exposed_users == pytest.approx(users, abs=1e-9)
    a, b = short.row("suggestions_per_user"), longer.row("suggestions_per_user")
    assert a is not None and b is not None and a.mde is not None and b.mde is not None
    assert a.baseline is not None and a.sd is not None
    # Each user keeps their rate: twice the days, twice the suggestions, the same relative sd.
    assert (b.baseline, b.sd) == pytest.approx((2 * a.baseline, 2 * a.sd), abs=1e-9)
    assert b.mde == pytest.approx(a.mde * math.sqrt(USERS / users), abs=1e-9)
    ratio_a, ratio_b = short.row("acceptance_rate"), longer.row("acceptance_rate")
    assert ratio_a is not None and ratio_b is not None
    assert (ratio_b.baseline, ratio_b.sd) == pytest.approx(
        (ratio_a.baseline, ratio_a.sd), abs=1e-12
    )


def test_capping_and_targeting_change_the_plan(conn: Connection) -> None:
    load_fleet(conn)
    capped = plan_experiment(
        conn,
        config(
            capping={"suggestions_per_user": {"absolute": 12}},
            targeting={"languages": {"include": ["python"]}, "ides": {"exclude": ["neovim"]}},
        ),
        today=TODAY,
        min_effective_users=0.0,
    )
    assert capped.languages == ("python",)
    shown = [min(float(t["shown_n"]), 12.0) for t in totals("python")]
    mean, variance = mean_and_variance(shown)
    row = capped.row("suggestions_per_user")
    assert row is not None
    assert (row.baseline, row.sd) == pytest.approx((mean, math.sqrt(variance)), abs=1e-9)
    assert any("org or IDE is not applied" in note for note in capped.notes)
    assert any("suggestions_per_user ≤ 12" in note for note in capped.notes)


def test_quantiles_are_left_out_and_no_data_is_said(conn: Connection) -> None:
    load_fleet(conn)
    plan = plan_experiment(
        conn, config(primary_metrics=["latency_p95", "acceptance_rate"]), today=TODAY
    )
    assert {row.metric for row in plan.rows} == {"acceptance_rate"}
    assert plan.planned_metrics == ("acceptance_rate",)
    assert any(note.startswith("latency_p95 is a quantile") for note in plan.notes)
    empty = plan_experiment(conn, config(), today=TODAY - dt.timedelta(days=30))
    assert (empty.window, empty.rows) == (None, ())
    assert any("no pre-period data" in note for note in empty.notes)
    assert empty.warnings() == []


def test_a_started_experiment_is_planned_on_the_days_before_its_start(conn: Connection) -> None:
    load_fleet(conn)
    started = dt.datetime.combine(TODAY - dt.timedelta(days=2), dt.time(9), dt.UTC)
    plan = plan_experiment(conn, config(), today=TODAY, started_at=started)
    assert plan.window == (TODAY - dt.timedelta(days=DAYS), TODAY - dt.timedelta(days=3))


# --- days to a target MDE on synthetic events ---------------------------------------------------


@pytest.fixture
def synthetic(conn: Connection) -> Connection:
    """1,500 users' events over the last 5 days, rolled up (no experiment running)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    load_synthetic(
        driver,
        SyntheticConfig(
            experiment="plan-synthetic", users=1500, events=40_000, days=5.0, pre_days=5.0
        ),
    )
    refresh_rollups(conn)
    return conn


def test_days_to_the_target_grow_as_the_target_shrinks(synthetic: Connection) -> None:
    plain = config(primary_metrics=["acceptance_rate", "cpr_120"], capping={})
    today = dt.datetime.now(dt.UTC).date()
    pre = load_pre_period(
        synthetic,
        first_day=today - dt.timedelta(days=28),
        stop_day=today,
        languages=plain.targeting.languages,
        metrics=list(plain.primary_metrics),
        caps={},
    )
    assert pre is not None and pre.days >= 4
    growth = growth_from_gaps(pre.growth[None].users, pre.growth[None].gaps, pre.days)
    assert list(growth.observed) == sorted(growth.observed)
    targets = (0.03, 0.05, 0.1, 0.2, 0.4)
    days = [
        plan_from_pre_period(pre, plain, target_mde=target).row("acceptance_rate")
        for target in targets
    ]
    found = [row.days_to_target if row and row.days_to_target else 10**6 for row in days]
    assert found == sorted(found, reverse=True)
    assert found[-1] < 10**6
    mde_by_duration = [
        plan_from_pre_period(pre, plain, duration_s=length * 86_400.0).row("acceptance_rate")
        for length in (1, 3, 7, 30)
    ]
    mdes = [row.mde for row in mde_by_duration if row is not None and row.mde is not None]
    assert len(mdes) == 4 and mdes == sorted(mdes, reverse=True)


# --- power so far, for the dashboard ------------------------------------------------------------


def test_power_progress_from_comparisons() -> None:
    cfg = config(plan={"mde": 0.05, "power": 0.8})
    comparisons = [
        ("acceptance_rate", Comparison(ResultCode.OK, 400, 410, 0.05, se_rel=0.02)),
        ("suggestions_per_user", Comparison(ResultCode.NO_USERS, 0, 0, 0.05)),
    ]
    plan = plan_from_pre_period(None, cfg)
    [acceptance, suggestions] = power_progress(cfg, comparisons, plan=plan)
    # α 0.05 over the 2 primary metrics: z_{1 − 0.0125} = 2.2414.
    expected = 0.5 * math.erfc(-(0.05 / 0.02 - Z_ALPHA_0025) / math.sqrt(2)) + 0.5 * math.erfc(
        (0.05 / 0.02 + Z_ALPHA_0025) / math.sqrt(2)
    )
    assert acceptance.power == pytest.approx(expected, abs=1e-12)
    assert acceptance.power == pytest.approx(power_at(0.05, 0.02, alpha=0.025), abs=1e-12)
    assert (acceptance.users, acceptance.planned_users) == (810, None)
    assert (suggestions.power, suggestions.users) == (None, 0)


def test_power_progress_against_the_plans_users(conn: Connection) -> None:
    load_fleet(conn)
    cfg = config()
    plan = plan_experiment(conn, cfg, today=TODAY, min_effective_users=0.0)
    comparison = Comparison(ResultCode.OK, 10, 10, 0.05, se_rel=0.1)
    [acceptance, _] = power_progress(cfg, [("acceptance_rate", comparison)], plan=plan)
    assert acceptance.planned_users == pytest.approx(USERS)
    assert acceptance.users_reached == pytest.approx(20 / USERS)


# --- the command line (committed rows) ----------------------------------------------------------


@pytest.fixture
def committed_fleet(engine: Engine) -> Iterator[None]:
    """The hand-made fleet's rollups over the 4 days before today, committed; deleted after."""
    prefix = f"{PREFIX}cli-"
    with engine.begin() as conn:
        conn.execute(insert(MetricRollupDaily), fleet_rows(dt.datetime.now(dt.UTC).date(), prefix))
    yield
    with engine.begin() as conn:
        conn.execute(delete(MetricRollupDaily).where(MetricRollupDaily.user_id.like(f"{prefix}%")))
        # A plan run with a refresh commits a rollup watermark: it must not outlive the test
        # (later tests refresh from the watermark and would skip their own older days).
        conn.execute(text("DELETE FROM rollup_state"))


def write_definition(tmp_path: Path, cfg: ExperimentConfig) -> Path:
    path = tmp_path / f"{cfg.key}.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_unset=True)))
    return path


def test_plan_a_file_as_json(database_url: str, committed_fleet: None, tmp_path: Path) -> None:
    cfg = config(key="plan-cli-file")
    # --no-refresh: a committed refresh would move the shared database's rollup watermark.
    result = run(
        database_url,
        "plan",
        str(write_definition(tmp_path, cfg)),
        "--format",
        "json",
        "--no-refresh",
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["experiment"] == "plan-cli-file"
    assert plan["languages"] == ["python", "go"]
    rows = {(r["metric"], r["language"]): r for r in plan["rows"]}
    assert set(rows) == {(m, lang) for m in cfg.primary_metrics for lang in (None, "python", "go")}
    shown = [float(t["shown_n"]) for t in totals()]
    mean, variance = mean_and_variance(shown)
    expected = (Z_ALPHA_0025 + Z_POWER_08) * math.sqrt(variance * (1 / 20 + 1 / 20)) / mean
    assert rows[("suggestions_per_user", None)]["mde"] == pytest.approx(expected, abs=1e-9)
    assert rows[("suggestions_per_user", None)]["code"] == "ok"


def test_plan_a_registered_key_as_a_table(
    database_url: str, committed_fleet: None, registry: CommittedRegistry
) -> None:
    registry.apply(config(key="plan-cli-key", status=Status.DRAFT.value))
    result = run(
        database_url, "plan", "plan-cli-key", "--no-refresh", "--mde", "0.5", "--duration", "4d"
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("plan for plan-cli-key: arms control 0.5, treatment 0.5")
    header = next(line for line in lines if line.startswith("metric"))
    assert header.split() == [
        "metric", "language", "users/arm", "baseline", "sd/user", "MDE", "@4", "d", "days",
        "to", "50.0%",
    ]  # fmt: skip
    table = lines[lines.index(header) + 1 :]
    assert table[0].split()[:3] == ["acceptance_rate", "(all)", "20"]
    assert table[1].split()[0] == "python"
    assert table[3].split()[:2] == ["suggestions_per_user", "(all)"]
    missing = run(database_url, "plan", "no-such-experiment", "--no-refresh")
    assert missing.exit_code == 2
    assert "no-such-experiment" in missing.stderr


def test_apply_warns_when_the_plan_misses_the_target(
    database_url: str, committed_fleet: None, tmp_path: Path, pg: PgConnection
) -> None:
    keys = ["plan-cli-apply", "plan-cli-nodata"]
    try:
        hard = config(key=keys[0], plan={"mde": 0.01, "duration_s": "4d"})
        result = run(database_url, "experiments", "apply", str(write_definition(tmp_path, hard)))
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "created plan-cli-apply (draft, coverage 1)"
        warnings = result.stderr.splitlines()
        assert len(warnings) == 2
        assert warnings[0].startswith(
            "warning: plan-cli-apply: acceptance_rate (all languages): MDE "
        )
        assert "exceeds the target 1.0% at power 0.8" in warnings[0]
        assert "suggestions_per_user" in warnings[1]
        # --no-plan: applied (here: unchanged) without looking at the pre-period.
        quiet = run(
            database_url,
            "experiments",
            "apply",
            str(write_definition(tmp_path, hard)),
            "--no-plan",
        )
        assert quiet.exit_code == 0, quiet.output
        assert quiet.stdout.strip() == "plan-cli-apply unchanged" and quiet.stderr == ""

        elsewhere = config(key=keys[1], targeting={"languages": {"include": ["cobol"]}})
        result = run(
            database_url, "experiments", "apply", str(write_definition(tmp_path, elsewhere))
        )
        assert result.exit_code == 0, result.output
        assert result.stderr == "plan-cli-nodata: planning skipped: no pre-period rollups\n"
    finally:
        pg.execute("DELETE FROM experiments WHERE key = ANY(%s)", (keys,))
        pg.execute("DELETE FROM experiment_audit WHERE experiment_key = ANY(%s)", (keys,))


def test_an_easy_target_gives_no_warning(
    database_url: str, committed_fleet: None, tmp_path: Path, pg: PgConnection
) -> None:
    easy = config(key="plan-cli-easy", plan={"mde": 5.0, "duration_s": "4d"})
    try:
        result = run(database_url, "experiments", "apply", str(write_definition(tmp_path, easy)))
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
    finally:
        pg.execute("DELETE FROM experiments WHERE key = 'plan-cli-easy'")
        pg.execute("DELETE FROM experiment_audit WHERE experiment_key = 'plan-cli-easy'")


def test_plan_rows_are_json_ready() -> None:
    plan = plan_from_pre_period(None, config())
    assert json.loads(json.dumps(plan.to_dict()))["rows"] == []
    assert dataclasses.asdict(plan)["experiment"] == "plan-test"
