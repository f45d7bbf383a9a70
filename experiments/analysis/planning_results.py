"""What ``codelift plan`` reports: a row per metric × language and the plan's assumptions."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from experiments.analysis.planning_model import MAX_DAYS
from experiments.analysis.stats.results import ResultCode


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
    # The metrics planned: those asked for that have a per-user variance (no quantiles).
    planned_metrics: tuple[str, ...]
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
                f"{self.duration_days:.3g} d exceeds the target {self.target_mde:.1%} at power "
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
        out["planned_metrics"] = list(self.planned_metrics)
        out["languages"] = list(self.languages)
        out["notes"] = list(self.notes)
        out["max_days"] = MAX_DAYS
        return out
