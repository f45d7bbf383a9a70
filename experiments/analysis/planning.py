"""Experiment planning: what a rollout plan can detect, from the targeted users' pre-period.

``plan_experiment`` reads the pre-period's rollups (``planning_sql``) and, per metric × language
(all languages first), gives the users per arm at the planned duration, the baseline, the
per-user sd, the relative MDE at the configured power and the days needed for the target MDE
(``planning_model`` holds the arithmetic). ``power_progress`` tells a running experiment how far
it is towards that power. How and why: docs/planning.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Iterable
from typing import Any

import sqlalchemy

from experiments.analysis.analyze import MIN_EFFECTIVE_USERS
from experiments.analysis.moments_sql import metric_names
from experiments.analysis.planning_model import (
    MAX_DAYS,
    Growth,
    Population,
    Profile,
    Step,
    days_to,
    exposed,
    growth_from_gaps,
    mde,
    population,
    power_at,
    profile,
    relative_se,
)
from experiments.analysis.planning_sql import PrePeriod, load_pre_period
from experiments.analysis.stats.results import Comparison, ResultCode
from experiments.definitions.capping import Capping
from experiments.definitions.config import ExperimentConfig
from experiments.definitions.metrics_catalog import METRICS

DEFAULT_WINDOW_DAYS = 28
DEFAULT_ALPHA = 0.05
_DAY_S = 86_400.0
# Users seen in this many days are shown as the growth curve (those within the window).
_GROWTH_SHOWN = (1, 7, 14, 28, 56, 90)


@dataclasses.dataclass(frozen=True)
class PlanRow:
    """One metric in one language (None: all targeted languages) at the planned duration."""

    metric: str
    language: str | None
    # The two-sided level this row is planned at (Bonferroni over its family).
    alpha: float
    code: ResultCode
    users_per_arm: dict[str, float]
    baseline: float | None = None
    sd: float | None = None
    # Relative MDE at the planned duration against the weakest treatment arm.
    mde: float | None = None
    # Too few effective users in an arm for the analysis to judge the row at the plan's end.
    low_power: bool = False
    # Days from the start until the MDE reaches the target (None: not within MAX_DAYS).
    days_to_target: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self) | {"code": self.code.value}


@dataclasses.dataclass(frozen=True)
class ExperimentPlan:
    """What the experiment's rollout plan can detect, with the assumptions behind it."""

    experiment: str
    control: str
    weights: dict[str, float]
    primary_metrics: tuple[str, ...]
    duration_days: float
    power: float
    target_mde: float
    alpha: float
    overall_alpha: float
    language_alpha: float | None
    # Rows with fewer effective users in an arm are shown, never judged, by the analysis.
    min_effective_users: float
    # The pre-period's first and last day (None: no data).
    window: tuple[dt.date, dt.date] | None
    # Targeted users seen in L days (all languages), for a few L; beyond the window extrapolated.
    growth: dict[int, float]
    # Targeted users exposed (all arms, all languages) by the planned duration.
    exposed_users: float
    languages: tuple[str, ...]
    rows: tuple[PlanRow, ...]
    notes: tuple[str, ...]

    def row(self, metric: str, language: str | None = None) -> PlanRow | None:
        """The row of ``metric`` in ``language`` (None: all languages)."""
        for row in self.rows:
            if (row.metric, row.language) == (metric, language):
                return row
        return None

    def shortfalls(self) -> list[PlanRow]:
        """All-languages rows of primary metrics whose MDE at the plan misses the target."""
        return [
            row
            for row in self.rows
            if row.language is None
            and row.metric in self.primary_metrics
            and (row.mde is None or row.mde > self.target_mde)
        ]

    def warnings(self) -> list[str]:
        """One line per primary metric the plan cannot detect the target effect on."""
        out = []
        for row in self.shortfalls():
            if row.mde is None:
                out.append(
                    f"{row.metric}: no MDE from the pre-period ({row.code.value}); "
                    f"power {self.power:g} at {self.target_mde:.1%} cannot be checked"
                )
                continue
            needs = f"{row.days_to_target} d" if row.days_to_target else f"> {MAX_DAYS} d"
            out.append(
                f"{row.metric} (all languages): MDE {row.mde:.1%} at the planned "
                f"{self.duration_days:g} d exceeds the target {self.target_mde:.1%} at power "
                f"{self.power:g}; the target needs {needs}"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``codelift plan --format json``)."""
        out = dataclasses.asdict(self)
        out["window"] = [day.isoformat() for day in self.window] if self.window else None
        out["growth"] = {str(days): users for days, users in self.growth.items()}
        out["rows"] = [row.to_dict() for row in self.rows]
        out["primary_metrics"] = list(self.primary_metrics)
        out["languages"] = list(self.languages)
        out["notes"] = list(self.notes)
        out["max_days"] = MAX_DAYS
        return out


def steps_of(config: ExperimentConfig) -> list[Step]:
    """When the plan's coverage rises and by how much, as shares of all targeted users.

    Stages are taken to advance at their minimum duration; the experiment's traffic slice of
    its layer scales every step.
    """
    traffic = config.traffic[1] - config.traffic[0]
    if not config.rollout.stages:
        coverage = config.coverage if config.coverage else 1.0
        return [Step(0.0, traffic * coverage)]
    steps, start, covered = [], 0.0, 0.0
    for stage in config.rollout.stages:
        steps.append(Step(start / _DAY_S, traffic * (stage.coverage - covered)))
        covered = stage.coverage
        start += stage.min_duration_s
    return steps


def window_of(
    *, started_at: dt.datetime | None, today: dt.date, days: int
) -> tuple[dt.date, dt.date]:
    """[first, stop): the ``days`` whole UTC days before today, or before the start day."""
    stop = today if started_at is None else min(today, started_at.astimezone(dt.UTC).date())
    return stop - dt.timedelta(days=days), stop


def _plannable(metrics: Iterable[str]) -> tuple[list[str], list[str]]:
    """The metrics with a per-user variance, and notes on the others."""
    known = set(metric_names())
    planned, notes = [], []
    for metric in dict.fromkeys(metrics):
        if metric in known:
            planned.append(metric)
        elif METRICS.get(metric) is not None and METRICS[metric].kind == "quantile":
            notes.append(
                f"{metric} is a quantile of all events (no per-user variance): not planned; "
                "latency_mean_per_completion is the per-user latency metric"
            )
        else:
            notes.append(f"{metric}: no per-user SQL for it, not planned")
    return planned, notes


def _caps(config: ExperimentConfig, metrics: Collection[str]) -> dict[str, Capping]:
    caps = {metric: config.capping_of(metric) for metric in metrics}
    return {metric: cap for metric, cap in caps.items() if cap is not None}


def plan_experiment(
    conn: sqlalchemy.Connection,
    config: ExperimentConfig,
    *,
    started_at: dt.datetime | None = None,
    today: dt.date | None = None,
    days: int = DEFAULT_WINDOW_DAYS,
    alpha: float = DEFAULT_ALPHA,
    target_mde: float | None = None,
    power: float | None = None,
    duration_s: float | None = None,
    metrics: Collection[str] | None = None,
    min_effective_users: float = MIN_EFFECTIVE_USERS,
) -> ExperimentPlan:
    """Plan ``config`` on the ``days`` whole UTC days of rollups before today (or its start)."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    first, stop = window_of(
        started_at=started_at, today=today or dt.datetime.now(dt.UTC).date(), days=days
    )
    planned, _ = _plannable(metrics if metrics is not None else config.primary_metrics)
    pre = None
    if planned:
        pre = load_pre_period(
            conn,
            first_day=first,
            stop_day=stop,
            languages=config.targeting.languages,
            metrics=planned,
            caps=_caps(config, planned),
        )
    return plan_from_pre_period(
        pre,
        config,
        requested_days=days,
        alpha=alpha,
        target_mde=target_mde,
        power=power,
        duration_s=duration_s,
        metrics=metrics,
        min_effective_users=min_effective_users,
    )


def _alphas(config: ExperimentConfig, alpha: float, languages: int) -> tuple[float, float | None]:
    # Bonferroni over the analysis' families: the primary metrics × treatment arms overall, and
    # × languages per language; Holm rejects at least what Bonferroni does, so it is safe.
    family = len(config.primary_metrics) * (len(config.arms) - 1)
    return alpha / family, alpha / (family * languages) if languages else None


def _notes(
    config: ExperimentConfig,
    pre: PrePeriod | None,
    requested_days: int,
    caps: dict[str, Capping],
    duration_days: float,
) -> list[str]:
    notes = []
    targeting = config.targeting
    if (
        targeting.orgs.include
        or targeting.orgs.exclude
        or targeting.ides.include
        or (targeting.ides.exclude)
    ):
        notes.append(
            "targeting by org or IDE is not applied: rollups have neither, so every user of the "
            "targeted languages is counted (fewer will be exposed)"
        )
    if pre is None:
        notes.append("no pre-period data: no targeted user seen in the window")
    else:
        if pre.days < requested_days:
            notes.append(f"only {pre.days} day(s) of pre-period data (asked for {requested_days})")
        if pre.days < 2:
            notes.append("one day of data: users are not extrapolated beyond it")
    if config.rollout.stages:
        notes.append(
            "stages are assumed to advance at their min_duration (a gate holding one longer, "
            "e.g. for its min_users, exposes fewer users)"
        )
        last = steps_of(config)[-1].start_days
        if last >= duration_days:
            notes.append(
                f"the last stage (coverage {config.rollout.stages[-1].coverage:g}) starts at day "
                f"{last:g}, when the plan ends: give plan.duration to plan its time"
            )
    elif not config.coverage:
        notes.append("no stages and no coverage: planned at full coverage")
    if caps:
        described = ", ".join(f"{metric} {cap.describe()}" for metric, cap in caps.items())
        notes.append(f"per-user contributions capped as the analysis caps them: {described}")
    notes.append(
        "fixed-horizon test without CUPED: CUPED lowers these MDEs; the gates' always-valid "
        "sequential tests need more users for the same power"
    )
    return notes


@dataclasses.dataclass(frozen=True)
class _AtDuration:
    """A row's figures for one duration."""

    population: Population
    mde: float | None
    # Fewer effective users than the analysis judges in the smallest arm.
    low_power: bool


def _at_duration(
    shape: Profile,
    growth: Growth,
    config: ExperimentConfig,
    steps: list[Step],
    days: float,
    *,
    alpha: float,
    power: float,
    min_effective_users: float,
) -> _AtDuration:
    pop = population(growth, shape, steps, days)
    control = config.arms[0].weight
    values = []
    for arm in config.arms[1:]:
        se = relative_se(pop, control, arm.weight)
        values.append(None if se is None else mde(se, alpha=alpha, power=power))
    worst = None if None in values else max(v for v in values if v is not None)
    smallest = min(arm.weight for arm in config.arms)
    return _AtDuration(pop, worst, pop.effective_users * smallest < min_effective_users)


def _row(
    *,
    metric: str,
    language: str | None,
    growth: Growth,
    pre: PrePeriod,
    config: ExperimentConfig,
    steps: list[Step],
    duration_days: float,
    alpha: float,
    power: float,
    target_mde: float,
    min_effective_users: float,
) -> PlanRow:
    weights = {arm.name: arm.weight for arm in config.arms}
    windows = [(w.days, w.active_users, w.metrics[metric]) for w in pre.moments.get(language, ())]
    shape = profile(windows)
    if shape is None:
        return PlanRow(metric, language, alpha, ResultCode.NO_USERS, dict.fromkeys(weights, 0.0))

    def at(days: float) -> _AtDuration:
        return _at_duration(
            shape,
            growth,
            config,
            steps,
            days,
            alpha=alpha,
            power=power,
            min_effective_users=min_effective_users,
        )

    planned = at(duration_days)
    code = planned.population.code
    if code is ResultCode.OK and planned.mde is None:
        code = ResultCode.TOO_FEW_USERS
    # A day counts only once the analysis would judge the row at all.
    curve = [
        None if figures.low_power else figures.mde
        for figures in (at(day) for day in range(1, MAX_DAYS + 1))
    ]
    variance = planned.population.variance
    return PlanRow(
        metric=metric,
        language=language,
        alpha=alpha,
        code=code,
        users_per_arm={arm: w * planned.population.users for arm, w in weights.items()},
        baseline=planned.population.mean,
        sd=variance**0.5 if variance is not None else None,
        mde=planned.mde,
        low_power=planned.low_power,
        days_to_target=days_to(target_mde, curve),
    )


def plan_from_pre_period(
    pre: PrePeriod | None,
    config: ExperimentConfig,
    *,
    requested_days: int = DEFAULT_WINDOW_DAYS,
    alpha: float = DEFAULT_ALPHA,
    target_mde: float | None = None,
    power: float | None = None,
    duration_s: float | None = None,
    metrics: Collection[str] | None = None,
    min_effective_users: float = MIN_EFFECTIVE_USERS,
) -> ExperimentPlan:
    """The plan from pre-period statistics already loaded (None: there were none).

    ``min_effective_users``: the analysis judges no row with fewer effective users in an arm,
    so a row below it at the planned end is ``low_power`` and no earlier day reaches the target.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    target = target_mde if target_mde is not None else config.plan.mde
    wanted_power = power if power is not None else config.plan.power
    duration_days = (duration_s if duration_s is not None else config.planned_duration_s) / _DAY_S
    planned, notes = _plannable(metrics if metrics is not None else config.primary_metrics)
    languages = tuple(pre.languages) if pre is not None else ()
    overall_alpha, language_alpha = _alphas(config, alpha, len(languages))
    notes += _notes(config, pre, requested_days, _caps(config, planned), duration_days)
    steps = steps_of(config)
    rows: list[PlanRow] = []
    growth_shown: dict[int, float] = {}
    exposed_users = 0.0
    if pre is not None:
        growths = {
            group: growth_from_gaps(g.users, g.gaps, pre.days) for group, g in pre.growth.items()
        }
        overall = growths[None]
        shown = {d for d in _GROWTH_SHOWN if d <= pre.days} | {pre.days}
        growth_shown = {d: overall.at(d) for d in sorted(shown)}
        growth_shown[round(duration_days)] = overall.at(duration_days)
        exposed_users = exposed(overall, steps, duration_days)
        for metric in planned:
            for language in (None, *languages):
                rows.append(
                    _row(
                        metric=metric,
                        language=language,
                        growth=growths[language],
                        pre=pre,
                        config=config,
                        steps=steps,
                        duration_days=duration_days,
                        alpha=overall_alpha if language is None else language_alpha or alpha,
                        power=wanted_power,
                        target_mde=target,
                        min_effective_users=min_effective_users,
                    )
                )
    return ExperimentPlan(
        experiment=config.key,
        control=config.arms[0].name,
        weights={arm.name: arm.weight for arm in config.arms},
        primary_metrics=config.primary_metrics,
        duration_days=duration_days,
        power=wanted_power,
        target_mde=target,
        alpha=alpha,
        overall_alpha=overall_alpha,
        language_alpha=language_alpha,
        min_effective_users=min_effective_users,
        window=(pre.first_day, pre.first_day + dt.timedelta(days=pre.days - 1)) if pre else None,
        growth=dict(sorted(growth_shown.items())),
        exposed_users=exposed_users,
        languages=languages,
        rows=tuple(rows),
        notes=tuple(notes),
    )


@dataclasses.dataclass(frozen=True)
class PowerProgress:
    """How far a running experiment is towards its planned power on one primary metric."""

    metric: str
    target_mde: float
    target_power: float
    alpha: float
    # The power reached so far against an effect of ``target_mde`` (None: no relative SE yet).
    power: float | None
    users: int
    # Users (all arms) the plan expects by its end, and the share of them reached so far.
    planned_users: float | None
    users_reached: float | None


def power_progress(
    config: ExperimentConfig,
    comparisons: Iterable[tuple[str, Comparison]],
    *,
    plan: ExperimentPlan | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> list[PowerProgress]:
    """Per primary metric, the power reached so far for the target MDE and the share of the
    planned users reached, from the analysis' all-languages comparisons (metric, comparison).

    The power uses each comparison's relative SE (CUPED-adjusted when the analysis applied it)
    at the plan's all-languages level; with several treatment arms, the weakest arm's.
    """
    overall_alpha, _ = _alphas(config, alpha, 0)
    by_metric: dict[str, list[Comparison]] = {}
    for metric, comparison in comparisons:
        by_metric.setdefault(metric, []).append(comparison)
    out = []
    for metric in config.primary_metrics:
        found = by_metric.get(metric, [])
        powers = [
            power_at(config.plan.mde, c.se_rel, alpha=overall_alpha)
            if c.se_rel is not None and c.se_rel > 0
            else None
            for c in found
        ]
        power = min(p for p in powers if p is not None) if found and None not in powers else None
        users = max((c.control_n for c in found), default=0) + sum(c.treatment_n for c in found)
        row = plan.row(metric) if plan is not None else None
        planned = sum(row.users_per_arm.values()) if row is not None else None
        out.append(
            PowerProgress(
                metric=metric,
                target_mde=config.plan.mde,
                target_power=config.plan.power,
                alpha=overall_alpha,
                power=power,
                users=users,
                planned_users=planned,
                users_reached=users / planned if planned else None,
            )
        )
    return out
