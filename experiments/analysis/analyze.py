"""Analysis of one experiment: every metric per treatment arm (and language) against control.

SQL (``metrics_sql``) returns per-arm sufficient statistics; this module runs the tests
(``stats``), applies the multiple-comparison correction across the family shown (metrics ×
treatment arms, and × languages in the per-language view), tests guardrails for
non-inferiority, and checks the split of users against the weights (SRM). The result is plain
data: the CLI prints it, the dashboard shows it, the gates decide on it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import sqlalchemy
from sqlalchemy.orm import Session

from experiments.analysis.gates import GateInput, GuardrailVerdict, MetricVerdict
from experiments.analysis.metrics_sql import ExperimentData, Source, load_experiment_data
from experiments.analysis.stats import (
    DEFAULT_N_STAR,
    AdjustedComparison,
    Comparison,
    Correction,
    NonInferiority,
    adjust,
    compare,
    non_inferiority,
    srm_p_value,
)
from experiments.definitions.config import ExperimentConfig
from experiments.definitions.metrics_catalog import METRICS
from experiments.definitions.models import Experiment
from experiments.definitions.registry import config_of
from experiments.definitions.status import Status

# latency_p95 is descriptive (there is no user-level test of a quantile here): as a guardrail
# it is tested through the per-user mean latency, and the report says so.
TESTED_AS = {"latency_p95": "latency_mean"}
# Per-language rows with fewer effective users (Kish, ``stats.estimates.effective_users``) than
# this in an arm are shown but not tested (``low_power``, left out of the family). In simulated
# A/A fleets (heavy-tailed per-user activity, a few dozen users per arm and language; effective
# users ≈ 0.36 × users) the delta-method and CUPED standard errors were too small below it:
# |t| > 1.96 in 7.5-8% of those rows, against 4.2-4.9% in the rows above it.
MIN_SLICE_EFFECTIVE_USERS = 40.0


@dataclasses.dataclass(frozen=True)
class MetricResult:
    """One metric in one treatment arm (and language), against control."""

    metric: str
    arm: str
    language: str | None
    comparison: Comparison
    adjusted: AdjustedComparison | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "metric": self.metric,
            "arm": self.arm,
            "language": self.language,
            **self.comparison.to_dict(),
            "p_adjusted": self.adjusted.p_adjusted if self.adjusted else None,
            "ci_adjusted": list(self.adjusted.ci) if self.adjusted and self.adjusted.ci else None,
            "significant": self.adjusted.significant if self.adjusted else None,
        }


@dataclasses.dataclass(frozen=True)
class GuardrailResult:
    """A guardrail's non-inferiority test in one treatment arm."""

    metric: str
    tested_as: str
    arm: str
    result: NonInferiority

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "metric": self.metric,
            "tested_as": self.tested_as,
            "arm": self.arm,
            **dataclasses.asdict(self.result),
            "code": self.result.code.value,
        }


@dataclasses.dataclass(frozen=True)
class AnalysisReport:
    """Everything ``codelift analyze`` prints, as data."""

    experiment: str
    status: str
    coverage: float
    control: str
    weights: dict[str, float]
    users_per_arm: dict[str, int]
    srm_p_value: float | None
    first_exposure: dt.datetime | None
    last_event: dt.datetime | None
    source: Source
    by_language: bool
    alpha: float
    correction: str
    n_star: float
    cuped: bool
    min_effective_users: float
    results: list[MetricResult]
    guardrails: list[GuardrailResult]
    latency_p95: dict[tuple[str, str | None], float]
    primary_metrics: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the CLI's --format json)."""
        return {
            "experiment": self.experiment,
            "status": self.status,
            "coverage": self.coverage,
            "control": self.control,
            "weights": self.weights,
            "users_per_arm": self.users_per_arm,
            "srm_p_value": self.srm_p_value,
            "time_range": [_iso(self.first_exposure), _iso(self.last_event)],
            "source": self.source,
            "by_language": self.by_language,
            "alpha": self.alpha,
            "correction": self.correction,
            "sequential_n_star": self.n_star,
            "cuped": self.cuped,
            "min_effective_users": self.min_effective_users,
            "primary_metrics": list(self.primary_metrics),
            "results": [result.to_dict() for result in self.results],
            "guardrails": [guardrail.to_dict() for guardrail in self.guardrails],
            "latency_p95": [
                {"arm": arm, "language": language, "p95_ms": value}
                for (arm, language), value in sorted(
                    self.latency_p95.items(), key=lambda item: (item[0][0], item[0][1] or "")
                )
            ],
        }


def analyze_data(
    data: ExperimentData,
    config: ExperimentConfig,
    *,
    status: str,
    coverage: float,
    by_language: bool,
    alpha: float = 0.05,
    correction: Correction | str = Correction.HOLM,
    n_star: float = DEFAULT_N_STAR,
    cuped: bool = False,
    min_effective_users: float = MIN_SLICE_EFFECTIVE_USERS,
) -> AnalysisReport:
    """Tests, corrections, guardrails and SRM from an experiment's sufficient statistics.

    ``min_effective_users``: per-language rows with fewer effective users in an arm are
    ``low_power`` (shown, not tested).
    """
    if not min_effective_users >= 0.0:
        raise ValueError(f"min_effective_users must be >= 0, got {min_effective_users}")
    correction = Correction(correction)
    control = config.arms[0].name
    treatments = [arm.name for arm in config.arms[1:]]
    weights = {arm.name: arm.weight for arm in config.arms}
    observed = [data.users_per_arm.get(arm, 0) for arm in weights]
    srm = srm_p_value(observed, list(weights.values())) if sum(observed) else None
    metric_names = list(dict.fromkeys(stats.metric for stats in data.metrics))
    groups: list[str | None] = [None]
    if by_language:
        groups += sorted({s.language for s in data.metrics if s.language is not None})

    def test(metric: str, arm: str, language: str | None) -> Comparison:
        return compare(
            data.get(metric, control, language),
            data.get(metric, arm, language),
            alpha=alpha,
            sequential=True,
            n_star=n_star,
            cuped=cuped,
            higher_is_better=METRICS[metric].higher_is_better,
            min_effective_users=0.0 if language is None else min_effective_users,
        )

    results: list[MetricResult] = []
    # Families: the overall rows together; with --by language, the per-language rows together.
    for family in ([None], groups[1:]) if by_language else ([None],):
        keys = [(m, a, lang) for lang in family for m in metric_names for a in treatments]
        comparisons = [test(*key) for key in keys]
        adjusted = adjust(comparisons, correction, alpha=alpha) if comparisons else []
        results += [
            MetricResult(metric, arm, language, comparison, adj)
            for (metric, arm, language), comparison, adj in zip(
                keys, comparisons, adjusted, strict=True
            )
        ]
    guardrails = [
        GuardrailResult(
            metric=guardrail.metric,
            tested_as=TESTED_AS.get(guardrail.metric, guardrail.metric),
            arm=arm,
            result=non_inferiority(
                data.get(TESTED_AS.get(guardrail.metric, guardrail.metric), control),
                data.get(TESTED_AS.get(guardrail.metric, guardrail.metric), arm),
                margin=guardrail.margin,
                higher_is_better=METRICS[guardrail.metric].higher_is_better,
                alpha=alpha,
                cuped=cuped,
                # Gates look again and again: the always-valid bound.
                sequential=True,
                n_star=n_star,
            ),
        )
        for guardrail in config.guardrails
        for arm in treatments
    ]
    return AnalysisReport(
        experiment=config.key,
        status=status,
        coverage=coverage,
        control=control,
        weights=weights,
        users_per_arm=dict(data.users_per_arm),
        srm_p_value=srm,
        first_exposure=data.first_exposure,
        last_event=data.last_event,
        source=data.source,
        by_language=by_language,
        alpha=alpha,
        correction=correction.value,
        n_star=n_star,
        cuped=cuped,
        min_effective_users=min_effective_users,
        results=results,
        guardrails=guardrails,
        latency_p95=dict(data.latency_p95),
        primary_metrics=config.primary_metrics,
    )


def analyze_experiment(
    conn: sqlalchemy.Connection,
    config: ExperimentConfig,
    *,
    status: str = Status.RUNNING.value,
    coverage: float = 1.0,
    by_language: bool = False,
    source: Source = "rollups",
    alpha: float = 0.05,
    correction: Correction | str = Correction.HOLM,
    n_star: float = DEFAULT_N_STAR,
    cuped: bool = False,
    until: dt.date | None = None,
    min_effective_users: float = MIN_SLICE_EFFECTIVE_USERS,
) -> AnalysisReport:
    """Load the experiment's sufficient statistics from PostgreSQL and analyze them.

    ``until``: the analysis as it stood at midnight UTC starting that day.
    """
    data = load_experiment_data(
        conn,
        experiment=config.key,
        by_language=by_language,
        source=source,
        cuped=cuped,
        until=until,
    )
    return analyze_data(
        data,
        config,
        status=status,
        coverage=coverage,
        by_language=by_language,
        alpha=alpha,
        correction=correction,
        n_star=n_star,
        cuped=cuped,
        min_effective_users=min_effective_users,
    )


def analyze_registered(
    conn: sqlalchemy.Connection,
    experiment: Experiment,
    *,
    by_language: bool = False,
    source: Source = "rollups",
    alpha: float = 0.05,
    correction: Correction | str = Correction.HOLM,
    n_star: float = DEFAULT_N_STAR,
    cuped: bool = False,
) -> AnalysisReport:
    """``analyze_experiment`` for an experiment of the registry: its stored definition, status
    and coverage."""
    return analyze_experiment(
        conn,
        config_of(experiment),
        status=experiment.status,
        coverage=experiment.coverage,
        by_language=by_language,
        source=source,
        alpha=alpha,
        correction=correction,
        n_star=n_star,
        cuped=cuped,
    )


def gate_view(report: AnalysisReport, config: ExperimentConfig) -> GateInput:
    """What the gate needs: overall (all-language) sequential verdicts and guardrail tests."""
    guardrail_metrics = {TESTED_AS.get(g.metric, g.metric) for g in config.guardrails}

    def verdicts(names: set[str]) -> list[MetricVerdict]:
        return [
            MetricVerdict(
                metric=result.metric,
                arm=result.arm,
                language=None,
                significantly_worse=_significantly_worse(
                    result.comparison, result.metric, report.alpha
                ),
                lift_rel=result.comparison.lift_rel,
                seq_ci_rel=result.comparison.seq_ci_rel,
                seq_p=result.comparison.seq_p_rel,
            )
            for result in report.results
            if result.language is None and result.metric in names
        ]

    return GateInput(
        users_per_arm=report.users_per_arm,
        srm_p_value=report.srm_p_value,
        primary=verdicts(set(config.primary_metrics)),
        guardrail_tests=verdicts(guardrail_metrics - set(config.primary_metrics)),
        non_inferiority=[
            GuardrailVerdict(
                metric=g.metric,
                arm=g.arm,
                margin=g.result.margin,
                non_inferior=g.result.non_inferior,
                lift_rel=g.result.lift_rel,
                p_value=g.result.p_value,
            )
            for g in report.guardrails
        ],
    )


def _significantly_worse(comparison: Comparison, metric: str, alpha: float) -> bool:
    # Worse = the always-valid interval lies wholly on the harmful side of zero. The relative
    # lift is used when defined, else the absolute one (a zero control baseline).
    interval, p = comparison.seq_ci_rel, comparison.seq_p_rel
    if interval is None or p is None:
        interval, p = comparison.seq_ci_abs, comparison.seq_p_abs
    if interval is None or p is None or p >= alpha:
        return False
    return interval[1] < 0 if METRICS[metric].higher_is_better else interval[0] > 0


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def gate_analyzer(session: Session, experiment: Experiment) -> tuple[GateInput, dict[str, Any]]:
    """The gates' view of an experiment: overall figures from the rollups as they are, with CUPED
    and Holm's correction (the caller brings the rollups up to date)."""
    report = analyze_registered(session.connection(), experiment, cuped=True)
    view = gate_view(report, config_of(experiment))
    evidence = {
        "users_per_arm": report.users_per_arm,
        "srm_p_value": report.srm_p_value,
        "primary": [v.__dict__ for v in view.primary],
        "guardrail_tests": [v.__dict__ for v in view.guardrail_tests],
        "non_inferiority": [v.__dict__ for v in view.non_inferiority],
    }
    return view, json.loads(json.dumps(evidence, default=str))
