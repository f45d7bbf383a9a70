"""The ``vllm serve`` command lines that serve an experiment's arms.

One deployment per base model: arms that differ only by LoRA adapter share it and are picked
by the request's ``model`` (``--enable-lora --lora-modules name=path …``). ``--generation-config
vllm`` keeps the model's generation_config.json from overriding the decoding the gateway pins.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Protocol

from experiments.variants import Variant, VariantOverrides
from serving.gateway.metrics import LATENCY_BUCKETS


class ArmOf(Protocol):
    """An experiment arm as this module reads it: its name and what it changes."""

    @property
    def name(self) -> str: ...

    @property
    def variant(self) -> VariantOverrides: ...


class ExperimentArms(Protocol):
    """An experiment as this module reads it (an ``ExperimentConfig`` is one)."""

    @property
    def key(self) -> str: ...

    @property
    def arms(self) -> Sequence[ArmOf]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Deployment:
    """One vLLM server: a base model, its adapters, and the arms it serves."""

    model: str
    port: int
    adapters: dict[str, str]
    arms: tuple[str, ...]
    max_model_len: int

    def argv(self, *, max_lora_rank: int, extra: tuple[str, ...] = ()) -> list[str]:
        """The command's arguments."""
        argv = [
            "vllm",
            "serve",
            self.model,
            "--port",
            str(self.port),
            "--generation-config",
            "vllm",
            "--max-model-len",
            str(self.max_model_len),
        ]
        if self.adapters:
            argv += ["--enable-lora", "--lora-modules"]
            argv += [f"{name}={path}" for name, path in sorted(self.adapters.items())]
            argv += ["--max-loras", str(len(self.adapters)), "--max-lora-rank", str(max_lora_rank)]
        return argv + list(extra)


def deployments(
    config: ExperimentArms,
    default: Variant,
    *,
    adapter_dir: str = "adapters",
    adapter_paths: Mapping[str, str] | None = None,
    base_port: int = 8000,
    include_local: bool = False,
) -> list[Deployment]:
    """The vLLM deployments ``config``'s arms need, grouped by base model, in arm order."""
    paths = dict(adapter_paths or {})
    groups: dict[str, tuple[dict[str, str], list[str], int]] = {}
    for arm in config.arms:
        variant = default.with_overrides(arm.variant)
        if variant.backend != "vllm" and not include_local:
            continue
        adapters, arms, max_len = groups.setdefault(variant.model, ({}, [], 0))
        if variant.adapter:
            adapters[variant.adapter] = paths.get(
                variant.adapter, f"{adapter_dir.rstrip('/')}/{variant.adapter}"
            )
        arms.append(arm.name)
        # Room for the arm's whole context budget, its completion and the FIM markers.
        needed = variant.context_tokens + variant.decoding.max_tokens + 16
        groups[variant.model] = (adapters, arms, max(max_len, needed))
    return [
        Deployment(model, base_port + i, adapters, tuple(arms), max_len)
        for i, (model, (adapters, arms, max_len)) in enumerate(groups.items())
    ]


def render(
    config: ExperimentArms,
    default: Variant,
    *,
    adapter_dir: str = "adapters",
    adapter_paths: Mapping[str, str] | None = None,
    base_port: int = 8000,
    max_lora_rank: int = 16,
    host: str = "127.0.0.1",
    include_local: bool = False,
    extra: tuple[str, ...] = (),
) -> str:
    """A shell script: one ``vllm serve`` per base model and the gateway's backend setting."""
    found = deployments(
        config,
        default,
        adapter_dir=adapter_dir,
        adapter_paths=adapter_paths,
        base_port=base_port,
        include_local=include_local,
    )
    lines = [f"# vLLM deployments for experiment {config.key!r}"]
    if not found:
        lines.append("# no arm of this experiment is served by vLLM (backend: vllm)")
        return "\n".join(lines) + "\n"
    buckets = ",".join(f"{b:g}" for b in LATENCY_BUCKETS)
    lines.append(
        "# vLLM's Prometheus metrics are per base model; the gateway measures latency per arm"
        f" (codelift_gateway_latency_seconds, buckets {buckets} s)."
    )
    servers: list[dict[str, object]] = []
    for deployment in found:
        lines.append(f"# arms: {', '.join(deployment.arms)}")
        argv = deployment.argv(max_lora_rank=max_lora_rank, extra=extra)
        lines.append(" \\\n    ".join(_pairs(argv)) + " &")
        models = [deployment.model, *sorted(deployment.adapters)]
        servers.append({"url": f"http://{host}:{deployment.port}", "models": models})
    lines.append("wait")
    lines.append(f"# gateway: export CODELIFT_GATEWAY_VLLM='{json.dumps(servers)}'")
    return "\n".join(lines) + "\n"


def _pairs(argv: list[str]) -> list[str]:
    # One option (and its values) per line, quoted for the shell.
    out: list[str] = [shlex.join(argv[:3])]
    current: list[str] = []
    for arg in argv[3:]:
        if arg.startswith("--") and current:
            out.append(shlex.join(current))
            current = []
        current.append(arg)
    if current:
        out.append(shlex.join(current))
    return out
