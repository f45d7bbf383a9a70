"""An immutable, compiled copy of the running experiments, for assignment without the database.

The assignment service builds one with ``load_snapshot`` whenever the registry version changes
and swaps it in whole; nothing in it is ever mutated, so readers need no lock.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from experiments.definitions.bucketing import BUCKETING_VERSIONS, arm_ranges, layer_seed
from experiments.definitions.config import Targeting
from experiments.definitions.models import Experiment
from experiments.definitions.registry import registry_version
from experiments.definitions.status import Status
from experiments.variants import VariantOverrides

log = logging.getLogger(__name__)

HashFn = Callable[[str, str], float]


class ArmAssignment(NamedTuple):
    """One experiment a user is in for a request, and the arm they get.

    A named tuple: hashing and comparing it is done in C, and assignment hashes tuples of them.
    """

    experiment: str
    arm: str
    layer: str


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledArm:
    """An arm with its bucket range at the experiment's current coverage."""

    low: float
    high: float
    overrides: VariantOverrides
    assignment: ArmAssignment


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledExperiment:
    """A running experiment reduced to what assignment needs, hash function resolved."""

    key: str
    layer: str
    targeting: Targeting
    hash_fn: HashFn
    layer_seed: str
    seed: str
    # Cache keys of the two positions; the bucketing version is part of them because the same
    # seed hashes differently under another version.
    layer_position_key: str
    position_key: str
    traffic_low: float
    traffic_high: float
    coverage: float
    arms: tuple[CompiledArm, ...]

    def targets(self, *, language: str, org: str, ide: str) -> bool:
        """Whether a request with these attributes is targeted."""
        return self.targeting.matches(language=language, org=org, ide=ide)


def compile_experiment(experiment: Experiment) -> CompiledExperiment:
    """A stored experiment compiled for assignment; ValueError when its row is unusable."""
    version = experiment.bucketing_version
    if version not in BUCKETING_VERSIONS:
        raise ValueError(f"unknown bucketing version {version}")
    if not 0.0 <= experiment.traffic_low < experiment.traffic_high <= 1.0:
        raise ValueError(f"bad traffic [{experiment.traffic_low}, {experiment.traffic_high})")
    layer_hash_seed = layer_seed(experiment.layer)
    ranges = arm_ranges([arm.weight for arm in experiment.arms], experiment.coverage)
    return CompiledExperiment(
        key=experiment.key,
        layer=experiment.layer,
        targeting=Targeting.model_validate(experiment.targeting),
        hash_fn=BUCKETING_VERSIONS[version],
        layer_seed=layer_hash_seed,
        seed=experiment.seed,
        layer_position_key=f"{version}:{layer_hash_seed}",
        position_key=f"{version}:{experiment.seed}",
        traffic_low=experiment.traffic_low,
        traffic_high=experiment.traffic_high,
        coverage=experiment.coverage,
        arms=tuple(
            CompiledArm(
                low=low,
                high=high,
                overrides=VariantOverrides.model_validate(arm.variant),
                assignment=ArmAssignment(
                    experiment=experiment.key, arm=arm.name, layer=experiment.layer
                ),
            )
            for arm, (low, high) in zip(experiment.arms, ranges, strict=True)
        ),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """The running experiments at one registry version, ordered by (layer, key).

    The order is the order in which arms' overrides are applied to the default variant.
    """

    version: int
    experiments: tuple[CompiledExperiment, ...]
    # Running experiments whose rows could not be compiled: they assign nobody (and are logged).
    unusable: tuple[str, ...] = ()

    def candidates(self, *, language: str, org: str, ide: str) -> tuple[CompiledExperiment, ...]:
        """The experiments whose targeting matches a request, in application order."""
        return tuple(
            experiment
            for experiment in self.experiments
            if experiment.targets(language=language, org=org, ide=ide)
        )


EMPTY_SNAPSHOT = RegistrySnapshot(version=-1, experiments=())


def load_snapshot(session: Session) -> RegistrySnapshot:
    """The running experiments and the registry version they belong to.

    The version is read before the experiments: under READ COMMITTED a change committed in
    between then yields a snapshot newer than its version, which only costs one extra reload.
    The other order could label old experiments with the new version and never reload them.
    """
    version = registry_version(session)
    running = session.scalars(
        select(Experiment).where(Experiment.status == Status.RUNNING.value)
    ).all()
    compiled: list[CompiledExperiment] = []
    unusable: list[str] = []
    for experiment in running:
        try:
            compiled.append(compile_experiment(experiment))
        except ValueError as exc:
            # One bad row must not freeze the snapshot: every other change, a kill switch
            # included, still has to reach the gateway. Its users get the default variant.
            log.error("experiment %r cannot be assigned, skipped: %s", experiment.key, exc)
            unusable.append(experiment.key)
    # Sorted in Python: the database's collation need not order text as Python does.
    compiled.sort(key=lambda experiment: (experiment.layer, experiment.key))
    return RegistrySnapshot(
        version=version, experiments=tuple(compiled), unusable=tuple(sorted(unusable))
    )
