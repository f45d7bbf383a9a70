"""Experiment definitions for the registry, config and CLI tests: valid unless a test says."""

from __future__ import annotations

import copy
from typing import Any

from experiments.definitions.config import ExperimentConfig, parse_config

_BASE: dict[str, Any] = {
    "description": "Python LoRA adapter vs. the base model",
    "layer": "completion-model",
    "targeting": {"languages": {"include": ["python"]}},
    "arms": [
        {"name": "control", "weight": 0.5, "description": "base model"},
        {"name": "lora", "weight": 0.5, "variant": {"adapter": "python-lora"}},
    ],
    "primary_metrics": ["acceptance_rate", "cpr_120"],
    "guardrails": [{"metric": "latency_p95", "margin": 0.1}],
    "rollout": {
        "stages": [
            {"coverage": 0.01, "min_users": 20, "min_duration_s": "1h"},
            {"coverage": 0.25, "min_users": 500, "min_duration_s": "2d"},
            {"coverage": 1.0},
        ]
    },
}


def definition(key: str = "exp-a", **fields: Any) -> dict[str, Any]:
    """A valid definition as read from a file, with top-level ``fields`` replaced or added."""
    data = copy.deepcopy(_BASE)
    data["key"] = key
    data.update(copy.deepcopy(fields))
    return data


def config(key: str = "exp-a", **fields: Any) -> ExperimentConfig:
    """``definition(key, **fields)`` validated."""
    return parse_config(definition(key, **fields))


def arms(*weights: float) -> list[dict[str, Any]]:
    """Arms named control, t1, t2, … with these weights."""
    names = ["control", *(f"t{i}" for i in range(1, len(weights)))]
    return [{"name": name, "weight": weight} for name, weight in zip(names, weights, strict=True)]
