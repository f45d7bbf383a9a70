"""Scenario files: the fleet of simulated developers, the experiment and its true effects.

A scenario is YAML (see ``examples/scenarios/``). Its ``experiment`` is an experiment
definition, inline or the path of a definition file relative to the scenario. ``effects`` are
the truth the analysis should find: per arm, optionally per language, a relative lift of the
acceptance probability or of persistence, or milliseconds added to latency, with an optional
novelty part that fades with the time since the developer's exposure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from experiments.definitions.config import (
    ExperimentConfig,
    load_config,
    parse_config,
    validation_problems,
)

Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]

EffectKind = Literal["acceptance", "persistence", "latency_ms"]


class ScenarioError(ValueError):
    """A scenario file that cannot be read or is invalid; the message names the field."""


class Effect(BaseModel):
    """A true effect of an arm, after each developer's exposure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arm: str
    kind: EffectKind
    # acceptance / persistence: relative lift of the probability (0.08 = +8%);
    # latency_ms: milliseconds added to every completion.
    value: float = Field(allow_inf_nan=False)
    # Empty: every language.
    languages: tuple[str, ...] = ()
    # A novelty part: ``novelty`` more at exposure, halving every ``novelty_half_life_days``.
    novelty: float = Field(default=0.0, allow_inf_nan=False)
    novelty_half_life_days: Positive = 1.0

    @model_validator(mode="after")
    def _sensible(self) -> Effect:
        if self.kind != "latency_ms" and not -0.9 <= self.value <= 2.0:
            raise ValueError(f"value: a relative {self.kind} effect must be in [-0.9, 2]")
        return self

    def applies_to(self, arm: str, language: str) -> bool:
        """Whether this effect acts on ``arm`` in ``language``."""
        return arm == self.arm and (not self.languages or language in self.languages)

    def at(self, days_since_exposure: float) -> float:
        """The effect's size this long after exposure (the novelty part fading)."""
        fade = math.pow(0.5, max(0.0, days_since_exposure) / self.novelty_half_life_days)
        return self.value + self.novelty * fade


class Fleet(BaseModel):
    """Who the simulated developers are and how they work (per-user random effects)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    developers: Annotated[int, Field(ge=2, le=10_000_000)] = 1000
    # Language -> share of developers whose main language it is (normalised).
    languages: dict[str, Positive] = Field(
        default_factory=lambda: {
            "python": 0.28,
            "typescript": 0.2,
            "java": 0.12,
            "go": 0.1,
            "rust": 0.08,
            "cpp": 0.08,
            "kotlin": 0.07,
            "ruby": 0.07,
        },
        min_length=1,
    )
    second_language_share: Share = 0.3
    ides: dict[str, Positive] = Field(
        default_factory=lambda: {"vscode": 0.6, "jetbrains": 0.3, "neovim": 0.1}, min_length=1
    )
    orgs: Annotated[int, Field(ge=1, le=10_000)] = 6
    sessions_per_day: Positive = 2.0
    session_minutes: Positive = 45.0
    suggestions_per_session: Positive = 10.0
    # Acceptance probability: logit-normal around ``acceptance`` with this per-user spread.
    acceptance: Annotated[float, Field(gt=0, lt=0.8)] = 0.28
    acceptance_user_sd: Annotated[float, Field(ge=0, le=3)] = 0.6
    # Probability an accepted suggestion survives each persistence checkpoint.
    persistence: Annotated[float, Field(gt=0, lt=1)] = 0.85
    latency_ms: Positive = 180.0
    error_rate: Share = 0.01
    manual_chars_per_minute: Positive = 90.0
    # Feedback comments per developer per simulated day.
    feedback_per_day: Annotated[float, Field(ge=0)] = 0.05


class Scenario(BaseModel):
    """A whole simulation: fleet, time span, experiment and true effects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    seed: int = 1
    fleet: Fleet = Fleet()
    # Simulated days of the experiment, after ``pre_days`` of history before it starts (CUPED).
    days: Annotated[float, Field(gt=0, le=6)] = 3.0
    pre_days: Annotated[float, Field(ge=0, le=5)] = 2.0
    experiment: ExperimentConfig
    effects: tuple[Effect, ...] = ()
    # What --check compares: metric names whose truth the simulator knows.
    check_metrics: tuple[Literal["acceptance_rate", "latency_mean_per_completion"], ...] = (
        "acceptance_rate",
        "latency_mean_per_completion",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        arms = {arm.name for arm in self.experiment.arms}
        for index, effect in enumerate(self.effects):
            if effect.arm not in arms:
                raise ValueError(
                    f"effects.{index}.arm: {effect.arm!r} is not an arm of "
                    f"{self.experiment.key!r} ({', '.join(sorted(arms))})"
                )
            unknown = set(effect.languages) - set(self.fleet.languages)
            if unknown:
                raise ValueError(
                    f"effects.{index}.languages: {sorted(unknown)} not in fleet.languages"
                )
        if self.days + self.pre_days > 6:
            raise ValueError("days + pre_days must be at most 6 (the collector keeps 7 days)")
        return self

    @property
    def is_aa(self) -> bool:
        """No arm differs from control: an A/A scenario."""
        return not any(e.value or e.novelty for e in self.effects)

    def lift(self, kind: EffectKind, arm: str, language: str, days_since_exposure: float) -> float:
        """The summed effects of ``kind`` on ``arm`` in ``language`` at that time."""
        return sum(
            e.at(days_since_exposure)
            for e in self.effects
            if e.kind == kind and e.applies_to(arm, language)
        )


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file; the experiment may be a path relative to it."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: cannot read it as YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: a scenario is a mapping of fields")
    experiment = data.get("experiment")
    try:
        if isinstance(experiment, str):
            data["experiment"] = load_config(path.parent / experiment)
        elif isinstance(experiment, dict):
            data["experiment"] = parse_config(experiment)
    except ValueError as exc:
        raise ScenarioError(f"{path}: experiment: {exc}") from None
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, whole="(scenario)")
        raise ScenarioError(f"{path}: invalid scenario:\n  " + "\n  ".join(problems)) from None
