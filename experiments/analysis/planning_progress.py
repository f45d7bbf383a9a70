"""How far a running experiment is towards its planned power, for the dashboard.

``power_progress`` takes the analysis' all-languages comparisons (no new query): the power the
observed relative standard error gives against the plan's target MDE, and the share of the
planned users reached (``planning.plan_experiment`` gives the plan).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from experiments.analysis.planning import DEFAULT_ALPHA, alpha_levels
from experiments.analysis.planning_model import power_at
from experiments.analysis.planning_results import ExperimentPlan
from experiments.analysis.stats.results import Comparison
from experiments.definitions.config import ExperimentConfig


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
    overall_alpha, _ = alpha_levels(config, alpha, 0)
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
