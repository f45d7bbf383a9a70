"""Experiment definitions as people write them (YAML or TOML), validated before they are stored.

A bad definition is rejected with every problem named (``arms: weights must sum to 1, ...``);
nothing is ever "repaired", because a repaired split would re-split live traffic.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from experiments.definitions.bucketing import BUCKETING_VERSIONS, CURRENT_VERSION, check_weights
from experiments.definitions.capping import Capping
from experiments.definitions.metrics_catalog import METRICS, canonical_metric
from experiments.definitions.status import Status
from experiments.variants import VariantOverrides


class ConfigError(ValueError):
    """A definition that cannot be accepted; the message names each problem."""


Slug = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$"
    ),
]
Label = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, to_lower=True)
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration_s(value: Any) -> Any:
    # "90m", "12h", "7d", "2w", or a number of seconds.
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(
                f"duration {value!r}: use a number of seconds or e.g. 30m, 12h, 7d, 2w"
            )
        return float(match.group(1)) * _UNIT_S[match.group(2)]
    return value


# Finite only: JSON (and so the JSONB columns) has no infinity.
Seconds = Annotated[float, BeforeValidator(_duration_s), Field(ge=0, allow_inf_nan=False)]


class Selector(BaseModel):
    """Values a request must have (``include``, empty = any) and must not have (``exclude``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    include: tuple[Label, ...] = ()
    exclude: tuple[Label, ...] = ()

    @model_validator(mode="after")
    def _not_both(self) -> Selector:
        both = sorted(set(self.include) & set(self.exclude))
        if both:
            raise ValueError(f"{both} both included and excluded")
        return self

    def matches(self, value: str) -> bool:
        """Whether a request with this value is targeted (case does not matter)."""
        value = value.lower()
        return (not self.include or value in self.include) and value not in self.exclude

    def disjoint_from(self, other: Selector) -> bool:
        """True when no value can match both selectors."""
        if self.include and other.include:
            return not (set(self.include) - set(other.exclude)) & (
                set(other.include) - set(self.exclude)
            )
        if self.include:
            return set(self.include) <= set(other.exclude)
        if other.include:
            return set(other.include) <= set(self.exclude)
        return False


class Targeting(BaseModel):
    """Which requests an experiment applies to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    languages: Selector = Selector()
    orgs: Selector = Selector()
    ides: Selector = Selector()

    def matches(self, *, language: str, org: str, ide: str) -> bool:
        """Whether a request is targeted."""
        return (
            self.languages.matches(language) and self.orgs.matches(org) and self.ides.matches(ide)
        )

    def disjoint_from(self, other: Targeting) -> bool:
        """True when no request can be targeted by both."""
        return (
            self.languages.disjoint_from(other.languages)
            or self.orgs.disjoint_from(other.orgs)
            or self.ides.disjoint_from(other.ides)
        )


class ArmConfig(BaseModel):
    """One arm: a share of the experiment's traffic and what it changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Slug
    weight: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    description: str = ""
    variant: VariantOverrides = VariantOverrides()


class Guardrail(BaseModel):
    """A metric that must not get worse by more than ``margin`` (relative, 0.05 = 5%)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    margin: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        return _known_metric(value)


class Stage(BaseModel):
    """One step of a gradual rollout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coverage: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    min_users: Annotated[int, Field(ge=0)] = 0
    min_duration_s: Seconds = 0.0


class Rollout(BaseModel):
    """Stages of coverage, each to be held until its minimum users and duration are met."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stages: tuple[Stage, ...] = ()

    @field_validator("stages")
    @classmethod
    def _increasing(cls, stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
        for before, after in zip(stages, stages[1:], strict=False):
            if after.coverage <= before.coverage:
                raise ValueError(
                    f"stages overlap: coverage {after.coverage:g} follows {before.coverage:g}; "
                    "each stage must cover more traffic than the one before"
                )
        return stages


def _known_metric(name: str) -> str:
    name = canonical_metric(name)
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    return name


def _off_is_none(value: Any) -> Any:
    # YAML reads `off` and `false` as False; "none"/"off" as strings are accepted too.
    if value is False or (isinstance(value, str) and value.strip().lower() in ("off", "none")):
        return None
    return value


MetricCapping = Annotated[Capping | None, BeforeValidator(_off_is_none)]


class Plan(BaseModel):
    """What the experiment must be able to detect: ``codelift plan`` and ``experiments apply``
    check the rollout plan against it on pre-period data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The power wanted for an effect of ``mde`` on each primary metric.
    power: Annotated[float, Field(gt=0.5, lt=1.0, allow_inf_nan=False)] = 0.8
    # Relative minimum detectable effect (0.05 = 5 % of the control value).
    mde: Annotated[float, Field(gt=0.0, le=10.0, allow_inf_nan=False)] = 0.05
    # How long the experiment runs; by default the rollout's stages' minimum durations summed
    # (14 days when the stages give none).
    duration_s: Seconds | None = None


class ExperimentConfig(BaseModel):
    """An experiment as written in a definition file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Slug
    description: str = ""
    # Defaults to the key: experiments with different keys are then uncorrelated.
    seed: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    bucketing_version: int = CURRENT_VERSION
    layer: Slug = "default"
    # The slice of the layer's traffic this experiment claims; experiments in one layer with
    # overlapping slices (and targeting) cannot run at the same time.
    traffic: tuple[float, float] = (0.0, 1.0)
    status: Status = Status.DRAFT
    coverage: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    targeting: Targeting = Targeting()
    arms: tuple[ArmConfig, ...]
    primary_metrics: tuple[str, ...]
    guardrails: tuple[Guardrail, ...] = ()
    rollout: Rollout = Rollout()
    # Per metric, a cap of each user's contribution replacing the catalog's default (or ``off``).
    capping: dict[str, MetricCapping] = {}
    plan: Plan = Plan()

    @field_validator("primary_metrics")
    @classmethod
    def _metrics_known(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if not names:
            raise ValueError("at least one primary metric is needed")
        return tuple(_known_metric(name) for name in names)

    @field_validator("capping")
    @classmethod
    def _capped_metrics_known(cls, capping: dict[str, Capping | None]) -> dict[str, Capping | None]:
        known = {_known_metric(name): cap for name, cap in capping.items()}
        quantiles = sorted(name for name, cap in known.items() if METRICS[name].kind == "quantile")
        if quantiles and any(known[name] is not None for name in quantiles):
            raise ValueError(
                f"{quantiles}: quantile metrics are not capped (their intervals are clustered "
                "by user already); remove them from capping"
            )
        return known

    @field_validator("seed")
    @classmethod
    def _not_a_layer_seed(cls, seed: str | None) -> str | None:
        # Layers hash with "layer:<name>": an experiment with that seed would have its arms
        # perfectly correlated with the layer's split.
        if seed is not None and seed.startswith("layer:"):
            raise ValueError("must not start with 'layer:' (reserved for layer hashes)")
        return seed

    @field_validator("bucketing_version")
    @classmethod
    def _version_known(cls, version: int) -> int:
        if version not in BUCKETING_VERSIONS:
            raise ValueError(f"unknown bucketing version {version}")
        return version

    @field_validator("traffic")
    @classmethod
    def _traffic_range(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        low, high = bounds
        if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low < high <= 1.0):
            raise ValueError(
                f"traffic must be [low, high) with 0 <= low < high <= 1, got {list(bounds)}"
            )
        return bounds

    @field_validator("arms")
    @classmethod
    def _arms_valid(cls, arms: tuple[ArmConfig, ...]) -> tuple[ArmConfig, ...]:
        if len(arms) < 2:
            raise ValueError("an experiment needs at least two arms (a control and a treatment)")
        names = [arm.name for arm in arms]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"arm names must be unique, repeated: {repeated}")
        check_weights([arm.weight for arm in arms])
        return arms

    def capping_of(self, metric: str) -> Capping | None:
        """The cap applied to ``metric``: this experiment's, else the catalog's default."""
        if metric in self.capping:
            return self.capping[metric]
        return METRICS[metric].capping

    @property
    def planned_duration_s(self) -> float:
        """How long the experiment is planned to run (``plan.duration``, else the stages')."""
        if self.plan.duration_s is not None:
            return self.plan.duration_s
        staged = sum(stage.min_duration_s for stage in self.rollout.stages)
        return staged if staged > 0 else 14 * 86_400.0

    @property
    def effective_seed(self) -> str:
        """The seed the bucketing hash uses."""
        return self.seed or self.key

    @property
    def initial_coverage(self) -> float:
        """Coverage when first started: as written, else the first stage's, else everyone."""
        if self.coverage is not None:
            return self.coverage
        return self.rollout.stages[0].coverage if self.rollout.stages else 1.0


def validation_problems(exc: ValidationError, *, whole: str = "(definition)") -> list[str]:
    """Each error of ``exc`` as "dotted.field: message" (``whole`` when it has no field)."""
    return [
        f"{'.'.join(str(part) for part in error['loc']) or whole}: "
        f"{error['msg'].removeprefix('Value error, ')}"
        for error in exc.errors(include_url=False)
    ]


def parse_config(data: Any) -> ExperimentConfig:
    """Validate a definition already read into Python objects."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise ConfigError("invalid experiment definition:\n  " + "\n  ".join(problems)) from None


def load_config(path: Path) -> ExperimentConfig:
    """Read and validate a definition file (.yaml, .yml or .toml)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it as UTF-8 text: {exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ConfigError(f"{path}: use a .yaml, .yml or .toml file")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from None
    return parse_config(data)
