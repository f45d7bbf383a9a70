"""``codelift vllm-command`` and ``codelift gateway`` on the command line."""

from __future__ import annotations

from typer.testing import CliRunner

from codelift.cli import app
from tests.experiment_factories import CommittedRegistry, arm, definition


def run(database_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, list(args), env={"CODELIFT_DATABASE_URL": database_url, "DATABASE_URL": None}
    )
    return result.exit_code, result.output


def test_vllm_command_renders_the_experiments_deployments(
    database_url: str, registry: CommittedRegistry
) -> None:
    registry.apply(
        definition(
            "cli-lora",
            arms=[
                arm("control", 0.5, backend="vllm", model="bigcode/starcoder2-3b"),
                arm("lora", 0.5, backend="vllm", model="bigcode/starcoder2-3b", adapter="py"),
            ],
        )
    )
    code, output = run(
        database_url, "vllm-command", "cli-lora", "--lora", "py=/srv/py", "--base-port", "9000"
    )
    assert code == 0, output
    assert "vllm serve bigcode/starcoder2-3b \\\n    --port 9000" in output
    assert "--lora-modules py=/srv/py" in output and "--max-loras 1" in output
    assert "# arms: control, lora" in output


def test_vllm_command_names_a_bad_argument(database_url: str) -> None:
    code, output = run(database_url, "vllm-command", "no-such-experiment")
    assert code == 2 and "no-such-experiment" in output
    code, output = run(database_url, "vllm-command", "x", "--lora", "nopath")
    assert code == 2 and "NAME=PATH" in output


def test_gateway_command_is_there() -> None:
    result = CliRunner().invoke(app, ["gateway", "--help"])
    assert result.exit_code == 0 and "completion gateway" in result.output
