"""Experiment definitions for tests, and a registry whose changes are committed.

Assignment services read the registry over connections of their own, so the registry changes
these tests make must be committed; ``CommittedRegistry.cleanup`` deletes what a test made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, delete, update
from sqlalchemy.orm import Session

from collector.models import ExposureRow
from experiments.definitions.config import ExperimentConfig, parse_config
from experiments.definitions.models import Experiment, ExperimentAudit, RegistryVersion
from experiments.definitions.registry import apply_definition, ramp, registry_version, set_status
from experiments.definitions.status import Status
from experiments.variants import Variant

ACTOR = "tests"
DEFAULT_VARIANT = Variant(model="codelift-fim-small")


def arm(name: str, weight: float, **variant: Any) -> dict[str, Any]:
    """An arm as a definition file writes it."""
    return {"name": name, "weight": weight, "variant": variant}


def definition(
    key: str,
    *,
    layer: str = "default",
    traffic: tuple[float, float] = (0.0, 1.0),
    coverage: float = 1.0,
    status: Status = Status.RUNNING,
    targeting: dict[str, Any] | None = None,
    arms: Sequence[dict[str, Any]] | None = None,
    seed: str | None = None,
) -> ExperimentConfig:
    """A valid definition: by default running at full coverage, 50/50 control/treatment."""
    return parse_config(
        {
            "key": key,
            "seed": seed,
            "layer": layer,
            "traffic": traffic,
            "status": status.value,
            "coverage": coverage,
            "targeting": targeting or {},
            "arms": list(arms)
            if arms is not None
            else [arm("control", 0.5), arm("treatment", 0.5, decoding={"temperature": 0.6})],
            "primary_metrics": ["acceptance_rate"],
        }
    )


class CommittedRegistry:
    """Registry changes committed one transaction each, as an admin or the CLI makes them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.keys: set[str] = set()
        with Session(engine) as session:
            self._version_before = registry_version(session)

    def apply(self, config: ExperimentConfig) -> None:
        """Create (or update) an experiment."""
        self.keys.add(config.key)
        with Session(self.engine) as session:
            apply_definition(session, config=config, actor=ACTOR)
            session.commit()

    def ramp(self, key: str, coverage: float) -> None:
        """Change an experiment's coverage."""
        with Session(self.engine) as session:
            ramp(session, key=key, coverage=coverage, actor=ACTOR)
            session.commit()

    def set_status(self, key: str, status: Status) -> None:
        """Start, pause, stop or ship an experiment."""
        with Session(self.engine) as session:
            set_status(session, key=key, status=status, actor=ACTOR)
            session.commit()

    def cleanup(self) -> None:
        """Delete the experiments made here, their audit rows and exposures; reset the version.

        The version goes back to what it was so tests elsewhere see the counter they expect.
        """
        keys = sorted(self.keys)
        with Session(self.engine) as session:
            session.execute(delete(ExposureRow).where(ExposureRow.experiment.in_(keys)))
            session.execute(delete(ExperimentAudit).where(ExperimentAudit.experiment_key.in_(keys)))
            session.execute(delete(Experiment).where(Experiment.key.in_(keys)))
            session.execute(
                update(RegistryVersion)
                .where(RegistryVersion.id == 1)
                .values(version=self._version_before)
            )
            session.commit()
