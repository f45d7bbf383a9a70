"""Analysis of one experiment: every metric per treatment arm (and language) against control.

SQL (``metrics_sql``) returns per-arm sufficient statistics; this module runs the tests
(``stats``), applies the multiple-comparison corrections, tests guardrails for
non-inferiority, and checks the split of users against the weights (SRM). The result is plain
data: the CLI prints it, the dashboard shows it, the gates decide on it.

Families (docs/statistics.md, Families): the experiment's primary metrics × treatment arms form
the primary family, corrected with ``correction`` (Holm by default); with the per-language view
the per-language rows of the primary metrics form a second primary family (primary metrics ×
arms × languages). Every other metric is secondary: shown, with Benjamini–Hochberg over its own
family. Guardrails are judged by their one-sided non-inferiority tests, not by the families.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import sqlalchemy
from sqlalchemy.orm import Session

from experiments.analysis.gates import GateInput, GuardrailVerdict, MetricVerdict
from experiments.analysis.health import HealthCheck, health_checks
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
from experiments.analysis.stats.estimates import effective_users
from experiments.analysis.stats.quantiles import (
    QuantileEstimate,
    compare_quantiles,
    quantile_non_inferiority,
)
from experiments.definitions.capping import Capping
from experiments.definitions.config import ExperimentConfig
from experiments.definitions.metrics_catalog import METRICS
from experiments.definitions.models import Experiment
from experiments.definitions.registry import config_of
from experiments.definitions.status import Status

# Rows with fewer effective users (Kish, ``stats.estimates.effective_users``, after capping) than
# this in an arm are shown but never judged (``low_power``, left out of every family). Found by
# seeded A/A simulation on heavy-tailed, user-clustered fleets (bench/stats_calibration.py: p95
# caps, small-sample correction on, 4,000 experiments per size): below 25 acceptance reached
# 6.9 % false positives and % of code written 6.6-8.4 %; from 25 up acceptance, CPR and
# suggestions per user stayed within 4.1-5.8 % (% of code written 5.5-6.8 %).
MIN_EFFECTIVE_USERS = 25.0
SECONDARY_CORRECTION = Correction.BH


def caps_for(config: ExperimentConfig, capping: bool = True) -> dict[str, Capping]:
    """The caps of ``config``'s metrics (the catalog's defaults and its own overrides)."""
    if not capping:
        return {}
    caps = {name: config.capping_of(name) for name in METRICS}
    return {name: cap for name, cap in caps.items() if cap is not None}


@dataclasses.dataclass(frozen=True)
class MetricResult:
    """One metric in one treatment arm (and language), against control."""

    metric: str
    arm: str
    language: str | None
    comparison: Comparison
    adjusted: AdjustedComparison | None
    # "primary" or "secondary": which multiple-comparison family the row belongs to.
    family: str = "primary"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "metric": self.metric,
            "arm": self.arm,
            "language": self.language,
            "family": self.family,
            **self.comparison.to_dict(),
            "correction": self.adjusted.method.value if self.adjusted else None,
            "p_adjusted": self.adjusted.p_adjusted if self.adjusted else None,
            "ci_adjusted": list(self.adjusted.ci) if self.adjusted and self.adjusted.ci else None,
            "significant": self.adjusted.significant if self.adjusted else None,
        }


@dataclasses.dataclass(frozen=True)
class GuardrailResult:
    """A guardrail's non-inferiority test in one treatment arm."""

    metric: str
    arm: str
    result: NonInferiority

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "metric": self.metric,
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
    primary_metrics: tuple[str, ...]
    # Metric -> its cap ("p99", "≤ 500"); empty with capping off.
    capping: dict[str, str] = dataclasses.field(default_factory=dict)
    # Users exposed to more than one arm, left out of every figure.
    multiple_arm_users: int = 0
    health: list[HealthCheck] = dataclasses.field(default_factory=list)

    def result(self, metric: str, arm: str, language: str | None = None) -> MetricResult:
        """The row of ``metric`` in ``arm`` (and ``language``)."""
        for row in self.results:
            if (row.metric, row.arm, row.language) == (metric, arm, language):
                return row
        raise KeyError((metric, arm, language))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the CLI's --format json)."""
        return {
            "experiment": self.experiment,
            "status": self.status,
            "coverage": self.coverage,
            "control": self.control,
            "weights": self.weights,
            "users_per_arm": self.users_per_arm,
            "multiple_arm_users": self.multiple_arm_users,
            "srm_p_value": self.srm_p_value,
            "time_range": [_iso(self.first_exposure), _iso(self.last_event)],
            "source": self.source,
            "by_language": self.by_language,
            "alpha": self.alpha,
            "correction": self.correction,
            "secondary_correction": SECONDARY_CORRECTION.value,
            "sequential_n_star": self.n_star,
            "cuped": self.cuped,
            "capping": self.capping,
            "min_effective_users": self.min_effective_users,
            "primary_metrics": list(self.primary_metrics),
            "results": [result.to_dict() for result in self.results],
            "guardrails": [guardrail.to_dict() for guardrail in self.guardrails],
            "health": [check.to_dict() for check in self.health],
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
    min_effective_users: float = MIN_EFFECTIVE_USERS,
    small_sample: bool | None = None,
) -> AnalysisReport:
    """Tests, corrections, guardrails and SRM from an experiment's sufficient statistics.

    ``min_effective_users``: rows with fewer effective users in an arm are ``low_power``
    (shown, never judged). ``small_sample``: the heavy-user correction of the tests; by default
    on exactly when the data were capped.
    """
    if not min_effective_users >= 0.0:
        raise ValueError(f"min_effective_users must be >= 0, got {min_effective_users}")
    correction = Correction(correction)
    robust = bool(data.caps) if small_sample is None else small_sample
    control = config.arms[0].name
    treatments = [arm.name for arm in config.arms[1:]]
    weights = {arm.name: arm.weight for arm in config.arms}
    observed = [data.users_per_arm.get(arm, 0) for arm in weights]
    srm = srm_p_value(observed, list(weights.values())) if sum(observed) else None
    loaded = list(dict.fromkeys(stats.metric for stats in data.metrics))
    loaded += list(dict.fromkeys(q.metric for q in data.quantiles))
    groups: list[str | None] = [None]
    if by_language:
        languages = {s.language for s in data.metrics} | {q.language for q in data.quantiles}
        groups += sorted(language for language in languages if language is not None)

    def quantile(metric: str, arm: str, language: str | None = None) -> QuantileEstimate:
        return data.quantile(metric, arm, language).estimate(alpha)

    def test(metric: str, arm: str, language: str | None) -> Comparison:
        if METRICS[metric].kind == "quantile":
            result = compare_quantiles(
                quantile(metric, control, language),
                quantile(metric, arm, language),
                alpha=alpha,
                sequential=True,
                n_star=n_star,
            )
            # Kish's effective users on each user's share of the events.
            weakest = min(
                effective_users(data.quantile(metric, a, language).at_quantile)
                for a in (control, arm)
            )
            return dataclasses.replace(result, low_power=weakest < min_effective_users)
        return compare(
            data.get(metric, control, language),
            data.get(metric, arm, language),
            alpha=alpha,
            sequential=True,
            n_star=n_star,
            cuped=cuped,
            higher_is_better=METRICS[metric].higher_is_better,
            min_effective_users=min_effective_users,
            small_sample=robust,
        )

    primary = [m for m in loaded if m in config.primary_metrics]
    secondary = [m for m in loaded if m not in config.primary_metrics]
    results: list[MetricResult] = []
    # The overall rows form their own families; with --by language, so do the per-language rows.
    for family in ([None], groups[1:]) if by_language else ([None],):
        for name, metrics, method in (
            ("primary", primary, correction),
            ("secondary", secondary, SECONDARY_CORRECTION),
        ):
            keys = [(m, a, lang) for lang in family for m in metrics for a in treatments]
            comparisons = [test(*key) for key in keys]
            adjusted = adjust(comparisons, method, alpha=alpha) if comparisons else []
            results += [
                MetricResult(metric, arm, language, comparison, adj, name)
                for (metric, arm, language), comparison, adj in zip(
                    keys, comparisons, adjusted, strict=True
                )
            ]
    order = {metric: index for index, metric in enumerate(loaded)}
    results.sort(key=lambda r: (r.language is not None, r.language or "", order[r.metric]))

    def guardrail_test(metric: str, margin: float, arm: str) -> NonInferiority:
        if METRICS[metric].kind == "quantile":
            return quantile_non_inferiority(
                quantile(metric, control),
                quantile(metric, arm),
                margin=margin,
                alpha=alpha,
                sequential=True,
                n_star=n_star,
            )
        return non_inferiority(
            data.get(metric, control),
            data.get(metric, arm),
            margin=margin,
            higher_is_better=METRICS[metric].higher_is_better,
            alpha=alpha,
            cuped=cuped,
            # Gates look again and again: the always-valid bound.
            sequential=True,
            n_star=n_star,
            small_sample=robust,
        )

    guardrails = [
        GuardrailResult(g.metric, arm, guardrail_test(g.metric, g.margin, arm))
        for g in config.guardrails
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
        primary_metrics=config.primary_metrics,
        capping={metric: cap.describe() for metric, cap in data.caps.items()},
        multiple_arm_users=data.multiple_arm_users,
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
    min_effective_users: float = MIN_EFFECTIVE_USERS,
    capping: bool = True,
) -> AnalysisReport:
    """Load the experiment's sufficient statistics from PostgreSQL and analyze them.

    ``until``: the analysis as it stood at midnight UTC starting that day. ``capping``: cap
    each user's contribution as the catalog and the definition say (and correct the tests for
    heavy users); off, the statistics are gbstats' exactly.
    """
    data = load_experiment_data(
        conn,
        experiment=config.key,
        by_language=by_language,
        source=source,
        cuped=cuped,
        until=until,
        caps=caps_for(config, capping),
    )
    report = analyze_data(
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
        small_sample=capping,
    )
    return dataclasses.replace(report, health=experiment_health(conn, config, report, until))


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
    capping: bool = True,
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
        capping=capping,
    )


def experiment_health(
    conn: sqlalchemy.Connection,
    config: ExperimentConfig,
    report: AnalysisReport,
    until: dt.date | None = None,
) -> list[HealthCheck]:
    """The experiment's health checks, the shown-rate check read off ``report``'s rows."""
    treatments = [arm.name for arm in config.arms[1:]]
    return health_checks(
        conn,
        config,
        users_per_arm=report.users_per_arm,
        multiple_arm_users=report.multiple_arm_users,
        display={arm: report.result("display_rate", arm).comparison for arm in treatments},
        per_opportunity={
            arm: report.result("acceptance_per_opportunity", arm).comparison for arm in treatments
        },
        until=until,
    )


def gate_view(report: AnalysisReport, config: ExperimentConfig) -> GateInput:
    """What the gate needs: overall (all-language) sequential verdicts and guardrail tests."""
    guardrail_metrics = {g.metric for g in config.guardrails}

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
        # A failed check halts the rollout; warnings are listed with the decision.
        health=report.health,
    )


def _significantly_worse(comparison: Comparison, metric: str, alpha: float) -> bool:
    # Worse = the always-valid interval lies wholly on the harmful side of zero. The relative
    # lift is used when defined, else the absolute one (a zero control baseline).
    if comparison.low_power:
        return False  # too few effective users: shown, never judged
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
