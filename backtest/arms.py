"""The arms a backtest compares: named arms of an experiment, from the registry or a file."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session

from experiments.definitions.config import ExperimentConfig, load_config
from experiments.definitions.registry import config_of, get_experiment
from experiments.variants import DecodingOverrides, VariantOverrides

DEFINITION_SUFFIXES = (".yaml", ".yml", ".toml")


class ArmError(ValueError):
    """Arms that cannot be compared; the message names the problem."""


@dataclasses.dataclass(frozen=True, slots=True)
class Arm:
    """One arm: its name and the variant changes it serves."""

    name: str
    overrides: VariantOverrides

    def for_evaluation(self, seed: int) -> VariantOverrides:
        """The arm's changes, with ``seed`` as the sampling seed unless the arm pins one, so
        that an arm that samples (temperature > 0) gives the same text on every run."""
        decoding = self.overrides.decoding or DecodingOverrides()
        if decoding.seed is not None:
            return self.overrides
        return self.overrides.model_copy(
            update={"decoding": decoding.model_copy(update={"seed": seed})}
        )


def is_definition_file(reference: str) -> bool:
    """Whether ``--experiment`` names a definition file rather than a registry key."""
    return reference.lower().endswith(DEFINITION_SUFFIXES)


def load_experiment(reference: str, session: Session | None) -> ExperimentConfig:
    """A definition file (.yaml/.yml/.toml), or the registry's experiment of that key."""
    if is_definition_file(reference):
        return load_config(Path(reference))
    if session is None:
        raise ArmError(f"experiment {reference!r}: the registry needs a database")
    return config_of(get_experiment(session, reference))


def select_arms(config: ExperimentConfig, names: Sequence[str] | None) -> list[Arm]:
    """The named arms in the order given (the first is the baseline), or every arm."""
    arms = {arm.name: Arm(arm.name, arm.variant) for arm in config.arms}
    if not names:
        return list(arms.values())
    unknown = [name for name in names if name not in arms]
    if unknown:
        raise ArmError(
            f"arms: {', '.join(unknown)} not in experiment {config.key!r} "
            f"(its arms: {', '.join(arms)})"
        )
    if len(set(names)) != len(names):
        raise ArmError(f"arms: each arm once, got {', '.join(names)}")
    if len(names) < 2:
        raise ArmError("arms: name at least two arms to compare")
    return [arms[name] for name in names]
