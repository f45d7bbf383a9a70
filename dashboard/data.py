"""The dashboard's data access: every figure from ``experiments/``, shaped as tables.

No Streamlit here (``dashboard.cached`` adds the caching), so tests, the benchmark and the pages
read the same functions. Nothing here computes a statistic: tables only rename, filter and
arrange what ``experiments`` returns.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
from typing import Any

import pandas as pd
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from experiments.analysis.analyze import AnalysisReport, analyze_registered
from experiments.analysis.gate_models import GateDecisionRow
from experiments.analysis.gate_runner import gate_history
from experiments.analysis.history import look_days, sequential_history
from experiments.analysis.planning_progress import power_progress
from experiments.definitions.config import ExperimentConfig
from experiments.definitions.metrics_catalog import METRICS
from experiments.definitions.registry import (
    audit_log,
    config_of,
    get_experiment,
    list_experiments,
    ramp,
    set_status,
)
from experiments.definitions.status import Status
from experiments.product.metrics import Grain, ProductMetrics, product_overview
from experiments.product.serving_health import ServingGrain, ServingPoint, serving_by_arm


@dataclasses.dataclass(frozen=True)
class FilterOptions:
    """What the overview's filters offer."""

    languages: tuple[str, ...]
    ides: tuple[str, ...]
    first_day: dt.date | None
    last_day: dt.date | None


def filter_options(engine: Engine) -> FilterOptions:
    """Languages and days the rollups hold, and the IDEs seen in the last 30 days."""
    with engine.connect() as conn:
        days = conn.execute(text("SELECT min(day), max(day) FROM metric_rollup_daily")).one()
        languages = conn.execute(
            text("SELECT DISTINCT language FROM metric_rollup_daily ORDER BY 1")
        ).scalars()
        ides = conn.execute(
            text(
                "SELECT DISTINCT ide FROM completion_served "
                "WHERE client_ts > now() - interval '30 days' ORDER BY 1"
            )
        ).scalars()
        return FilterOptions(tuple(languages), tuple(ides), days[0], days[1])


def rollups_as_of(engine: Engine) -> dt.datetime | None:
    """The last rollup refresh's watermark: newer events are not in the figures yet."""
    with engine.connect() as conn:
        value: dt.datetime | None = conn.execute(
            text("SELECT watermark FROM rollup_state WHERE id = 1 AND watermark > '-infinity'")
        ).scalar_one_or_none()
        return value


@dataclasses.dataclass(frozen=True)
class OverviewFrames:
    """The overview's tables: the whole range (one row), per period, per language."""

    total: pd.DataFrame
    series: pd.DataFrame
    by_language: pd.DataFrame


def overview_frames(
    engine: Engine,
    *,
    first: dt.date,
    last: dt.date,
    grain: Grain,
    languages: tuple[str, ...] = (),
    ides: tuple[str, ...] = (),
) -> OverviewFrames:
    """Product metrics of the range, per period and per language: one row each, one column
    per figure."""
    with engine.connect() as conn:
        overview = product_overview(
            conn, first=first, last=last, grain=grain, languages=languages, ides=ides
        )

    def frame(rows: list[ProductMetrics]) -> pd.DataFrame:
        return pd.DataFrame([row.as_row() for row in rows], columns=_OVERVIEW_COLUMNS)

    return OverviewFrames(
        total=frame([overview.total] if overview.total else []),
        series=frame(overview.series),
        by_language=frame(overview.by_language),
    )


_OVERVIEW_COLUMNS = [
    "period",
    "language",
    "active_users",
    "suggestions_served",
    "suggestions_shown",
    "suggestions_accepted",
    "acceptance_rate",
    "pct_code_written",
    "error_rate",
    "latency_mean_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "cpr_30",
    "cpr_120",
    "cpr_300",
    "cpr_600",
]


# --- experiments ----------------------------------------------------------------------------------


def stage_label(config: ExperimentConfig, coverage: float) -> str:
    """``stage 2/4`` when the coverage is one of the rollout's stages, else ``-``."""
    stages = [stage.coverage for stage in config.rollout.stages]
    if coverage in stages:
        return f"stage {stages.index(coverage) + 1}/{len(stages)}"
    return "-"


def experiments_frame(engine: Engine) -> pd.DataFrame:
    """Every experiment with its status, coverage, stage and latest gate decision."""
    with Session(engine) as session:
        newest = (
            select(func.max(GateDecisionRow.id))
            .group_by(GateDecisionRow.experiment_key)
            .scalar_subquery()
        )
        latest = {
            row.experiment_key: row
            for row in session.scalars(
                select(GateDecisionRow).where(GateDecisionRow.id.in_(newest))
            )
        }
        rows = []
        for experiment in list_experiments(session):
            config = config_of(experiment)
            gate = latest.get(experiment.key)
            rows.append(
                {
                    "experiment": experiment.key,
                    "status": experiment.status,
                    "coverage": experiment.coverage,
                    "stage": stage_label(config, experiment.coverage),
                    "arms": ", ".join(arm.name for arm in config.arms),
                    "layer": experiment.layer,
                    "latest_gate": gate.decision if gate else None,
                    "gate_at": gate.at if gate else None,
                    "started_at": experiment.started_at,
                    "description": experiment.description,
                }
            )
    return pd.DataFrame(rows)


@dataclasses.dataclass(frozen=True)
class ExperimentDetail:
    """What the experiment page shows, as tables."""

    key: str
    status: str
    coverage: float
    stage: str
    config: ExperimentConfig
    report: AnalysisReport
    results: pd.DataFrame  # overall lifts per metric and arm
    by_language: pd.DataFrame  # per-language lifts with corrected p-values
    guardrails: pd.DataFrame
    gates: pd.DataFrame
    timeline: pd.DataFrame  # coverage and status after every registry change
    # The health checks stored with the newest gate decision that has any (else the analysis'
    # own, computed now), and when they were stored (None: computed now).
    health: pd.DataFrame
    health_at: dt.datetime | None
    # Per primary metric: the power reached so far against the plan's MDE.
    power: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)


def experiment_detail(engine: Engine, key: str) -> ExperimentDetail:
    """The analysis by language, guardrails, gate decisions and ramp timeline of ``key``."""
    with Session(engine) as session:
        experiment = get_experiment(session, key)
        config = config_of(experiment)
        report = analyze_registered(session.connection(), experiment, by_language=True)
        decisions = gate_history(session, key=key)
        gates = [_gate_row(row) for row in decisions]
        timeline = [
            {
                "at": row.at,
                "action": row.action,
                "coverage": (row.after or {}).get("coverage"),
                "status": (row.after or {}).get("status"),
                "actor": row.actor,
                "reason": row.reason,
            }
            for row in reversed(audit_log(session, key=key, limit=500))
        ]
        status, coverage = experiment.status, experiment.coverage
    results = [
        {
            **result.to_dict(),
            # The confidence the corrected CI was rebuilt at (it differs per row).
            "ci_adjusted_level": 1.0 - result.adjusted.level
            if result.adjusted and result.adjusted.level is not None
            else None,
        }
        for result in report.results
    ]
    frame = pd.DataFrame(results)
    overall = frame[frame["language"].isna()].drop(columns=["language"]).reset_index(drop=True)
    languages = frame[frame["language"].notna()].reset_index(drop=True)
    for table in (overall, languages):
        table.insert(1, "direction", [_direction(m) for m in table["metric"]])
    guardrails = pd.DataFrame([g.to_dict() for g in report.guardrails])
    stored = next((row for row in decisions if row.health), None)
    checks = stored.health if stored else [check.to_dict() for check in report.health]
    return ExperimentDetail(
        key=key,
        status=status,
        coverage=coverage,
        stage=stage_label(config, coverage),
        config=config,
        report=report,
        results=overall,
        by_language=languages,
        guardrails=guardrails,
        gates=pd.DataFrame(gates, columns=_GATE_COLUMNS),
        timeline=pd.DataFrame(
            timeline, columns=["at", "action", "coverage", "status", "actor", "reason"]
        ),
        health=health_frame(checks),
        health_at=stored.at if stored else None,
        power=power_frame(config, report),
    )


POWER_COLUMNS = ["metric", "power", "target_power", "target_mde", "alpha", "users"]


def power_frame(config: ExperimentConfig, report: AnalysisReport) -> pd.DataFrame:
    """Progress to power per primary metric, from the analysis' all-languages rows."""
    progress = power_progress(
        config,
        [(r.metric, r.comparison) for r in report.results if r.language is None],
        alpha=report.alpha,
    )
    return pd.DataFrame(
        [
            {
                "metric": p.metric,
                "power": p.power,
                "target_power": p.target_power,
                "target_mde": p.target_mde,
                "alpha": p.alpha,
                "users": p.users,
            }
            for p in progress
        ],
        columns=POWER_COLUMNS,
    )


HEALTH_COLUMNS = ["check", "slice", "status", "reason"]


def health_frame(checks: list[dict[str, Any]]) -> pd.DataFrame:
    """Health checks (``HealthCheck.to_dict``) as a table, failing first, then warnings."""
    order = {"fail": 0, "warn": 1, "pass": 2}
    rows = [
        {
            "check": check["name"],
            # None: the whole experiment (or, for a skipped-slices note, no one slice).
            "slice": check["slice"] or "-",
            "status": check["status"],
            "reason": check["reason"],
        }
        for check in sorted(checks, key=lambda c: order.get(str(c["status"]), 3))
    ]
    return pd.DataFrame(rows, columns=HEALTH_COLUMNS)


def health_summary(checks: list[dict[str, Any]]) -> str:
    """``1 fail, 2 warn, 10 pass`` (statuses present only); empty for no checks."""
    counts = dict.fromkeys(("fail", "warn", "pass"), 0)
    for check in checks:
        counts[str(check["status"])] = counts.get(str(check["status"]), 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n)


def _direction(metric: str) -> str:
    info = METRICS.get(metric)
    return "higher is better" if info is None or info.higher_is_better else "lower is better"


_GATE_COLUMNS = [
    "at",
    "decision",
    "coverage",
    "next_coverage",
    "applied",
    "actor",
    "health",
    "reasons",
]


def _gate_row(row: GateDecisionRow) -> dict[str, Any]:
    return {
        "at": row.at,
        "decision": row.decision,
        "coverage": row.coverage,
        "next_coverage": row.next_coverage,
        "applied": row.applied,
        "actor": row.actor,
        "health": health_summary(row.health) or "-",
        "reasons": "; ".join(row.reasons),
    }


def history_frame(engine: Engine, key: str) -> pd.DataFrame:
    """The primary metrics' sequential CI of every treatment arm, day by day."""
    with Session(engine) as session:
        config = config_of(get_experiment(session, key))
        conn = session.connection()
        bounds = conn.execute(
            text("SELECT min(client_ts), max(client_ts) FROM exposure WHERE experiment = :k"),
            {"k": key},
        ).one()
        if bounds[0] is None:
            return pd.DataFrame(columns=_HISTORY_COLUMNS)
        points = sequential_history(conn, config, days=look_days(bounds[0], bounds[1]))
    return pd.DataFrame(
        [
            {
                "as_of": point.as_of,
                "metric": point.metric,
                "arm": point.arm,
                "users": point.users,
                "lift_rel": point.comparison.lift_rel,
                "seq_ci_rel_low": point.comparison.seq_ci_rel[0]
                if point.comparison.seq_ci_rel
                else None,
                "seq_ci_rel_high": point.comparison.seq_ci_rel[1]
                if point.comparison.seq_ci_rel
                else None,
                "seq_p_rel": point.comparison.seq_p_rel,
            }
            for point in points
        ],
        columns=_HISTORY_COLUMNS,
    )


_HISTORY_COLUMNS = [
    "as_of",
    "metric",
    "arm",
    "users",
    "lift_rel",
    "seq_ci_rel_low",
    "seq_ci_rel_high",
    "seq_p_rel",
]


def experiment_with_history(engine: Engine, key: str) -> tuple[ExperimentDetail, pd.DataFrame]:
    """``experiment_detail`` and ``history_frame`` at once, on two connections: the page needs
    both and each is a single-threaded statement, so a second core halves the wait."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        history = pool.submit(history_frame, engine, key)
        return experiment_detail(engine, key), history.result()


def next_stage(config: ExperimentConfig, coverage: float) -> float | None:
    """The coverage of the first rollout stage above ``coverage``."""
    for stage in config.rollout.stages:
        if stage.coverage > coverage:
            return stage.coverage
    return None


def ramp_experiment(engine: Engine, *, key: str, coverage: float, actor: str) -> None:
    """Set the coverage through the registry (audited as ``actor``)."""
    with Session(engine) as session:
        ramp(session, key=key, coverage=coverage, actor=actor, reason="dashboard")
        session.commit()


def set_experiment_status(engine: Engine, *, key: str, status: Status, actor: str) -> None:
    """Pause or resume through the registry (audited as ``actor``)."""
    with Session(engine) as session:
        set_status(session, key=key, status=status, actor=actor, reason="dashboard")
        session.commit()


# --- serving --------------------------------------------------------------------------------------


def serving_frame(
    engine: Engine, *, key: str, start: dt.datetime, end: dt.datetime, grain: ServingGrain
) -> pd.DataFrame:
    """Requests, errors and latency per arm of ``key`` per period."""
    with engine.connect() as conn:
        points = serving_by_arm(conn, experiment=key, start=start, end=end, grain=grain)
    return pd.DataFrame(
        [dataclasses.asdict(point) for point in points],
        columns=[field.name for field in dataclasses.fields(ServingPoint)],
    )
