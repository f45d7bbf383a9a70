"""Experiment planning: what a rollout plan can detect, from the targeted users' pre-period.

``plan_experiment`` reads the pre-period's rollups (``planning_sql``) and, per metric × language
(all languages first), gives the users per arm at the planned duration, the baseline, the
per-user sd, the relative MDE at the configured power and the days needed for the target MDE
(``planning_model`` holds the arithmetic, ``planning_results`` the result types).
``planning_progress.power_progress`` tells a running experiment how far it is towards that
power. How and why: docs/planning.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Iterable

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
    profile,
    relative_se,
)
from experiments.analysis.planning_results import ExperimentPlan, PlanRow
from experiments.analysis.planning_sql import PrePeriod, load_pre_period
from experiments.analysis.stats.results import ResultCode
from experiments.definitions.capping import Capping
from experiments.definitions.config import ExperimentConfig
from experiments.definitions.metrics_catalog import METRICS

DEFAULT_WINDOW_DAYS = 28
DEFAULT_ALPHA = 0.05
# Under two weeks the growth curve has not yet flattened out of its first days' rise (and misses
# a weekly cycle), so its extrapolation is flagged.
SHORT_WINDOW_DAYS = 14
_DAY_S = 86_400.0
# Users seen in this many days are shown as the growth curve (those within the window).
_GROWTH_SHOWN = (1, 7, 14, 28, 56, 90)


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


def alpha_levels(
    config: ExperimentConfig, alpha: float, languages: int
) -> tuple[float, float | None]:
    """The planning levels of all-languages rows and of language rows (None: no languages)."""
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
    if any((targeting.orgs.include, targeting.orgs.exclude, targeting.ides.include)) or (
        targeting.ides.exclude
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
        elif pre.days < SHORT_WINDOW_DAYS:
            notes.append(
                f"users beyond the {pre.days} days seen are extrapolated from a short curve "
                "(still rising steeply): treat longer durations as rough"
            )
    if config.rollout.stages:
        notes.append(
            "stages are assumed to advance at their min_duration (a gate holding one longer, "
            "e.g. for its min_users, exposes fewer users)"
        )
        last = steps_of(config)[-1].start_days
        if last >= duration_days:
            notes.append(
                f"the last stage (coverage {config.rollout.stages[-1].coverage:g}) starts at day "
                f"{last:.3g}, when the plan ends: give plan.duration to plan its time"
            )
    elif config.coverage == 0:
        notes.append("no stages and coverage 0: planned at full coverage")
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
    overall_alpha, language_alpha = alpha_levels(config, alpha, len(languages))
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
        # The window's curve, and where the plan's (whole) duration takes it.
        shown = {d for d in _GROWTH_SHOWN if d <= pre.days} | {
            pre.days,
            max(1, round(duration_days)),
        }
        growth_shown = {d: overall.at(d) for d in sorted(shown)}
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
        planned_metrics=tuple(planned),
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
