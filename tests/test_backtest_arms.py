"""Which arms a backtest compares, and the variant each is evaluated with."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from backtest.arms import Arm, ArmError, load_experiment, select_arms
from experiments.definitions.config import load_config
from experiments.definitions.registry import apply_definition
from experiments.variants import VariantOverrides
from tests.experiment_factories import arm, definition

EXAMPLE = Path(__file__).parents[1] / "examples" / "experiments" / "lora-python.yaml"


def test_arms_come_in_the_order_named_and_default_to_all() -> None:
    config = load_config(EXAMPLE)
    assert [a.name for a in select_arms(config, None)] == ["control", "lora"]
    chosen = select_arms(config, ["lora", "control"])
    assert [a.name for a in chosen] == ["lora", "control"]
    assert chosen[0].overrides.adapter == "python-lora"


@pytest.mark.parametrize(
    ("names", "problem"),
    [(["control", "nope"], "nope not in experiment"), (["lora"], "at least two"),
     (["lora", "lora"], "each arm once")],
)  # fmt: skip
def test_bad_arm_lists_are_named(names: list[str], problem: str) -> None:
    with pytest.raises(ArmError, match=problem):
        select_arms(load_config(EXAMPLE), names)


def test_an_experiment_is_read_from_the_registry_or_a_file(db_session: Session) -> None:
    apply_definition(
        db_session,
        config=definition("bt-registry", arms=[arm("a", 0.5), arm("b", 0.5, model="other")]),
        actor="tests",
    )
    assert [a.name for a in select_arms(load_experiment("bt-registry", db_session), None)] == [
        "a",
        "b",
    ]
    assert load_experiment(str(EXAMPLE), None).key == "lora-python"
    with pytest.raises(ArmError, match="needs a database"):
        load_experiment("bt-registry", None)


def test_evaluation_pins_the_sampling_seed_unless_the_arm_does() -> None:
    sampled = Arm("s", VariantOverrides.model_validate({"decoding": {"stop": ["\n"]}}))
    assert sampled.for_evaluation(7).as_dict() == {"decoding": {"stop": ["\n"], "seed": 7}}
    pinned = Arm("p", VariantOverrides.model_validate({"decoding": {"seed": 1}}))
    assert pinned.for_evaluation(7).as_dict() == {"decoding": {"seed": 1}}
