"""Every ``codelift`` command fails the same way, and the command line starts without its features.

A user error (an unknown experiment, a file that does not parse, a bad argument) prints one line,
``error: <message>``, on stderr (a bad definition lists its problems on indented lines below it)
and exits 2, with no traceback, whichever group the command is in
(``core.cli_support.CommandError``). ``--help`` must not load torch, scikit-learn, Streamlit
or the statistics stack: importing ``codelift.cli`` is checked in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from core.cli_support import FAILURE_EXIT, CommandError, command_app
from tests.test_cli import run

CODELIFT = Path(sys.executable).with_name("codelift")
# Modules `codelift --help` must not import (the features' heavy dependencies).
HEAVY = (
    "torch",
    "sklearn",
    "streamlit",
    "sentence_transformers",
    "scipy",
    "numpy",
    "pandas",
    "sqlalchemy",
)


def _bad_yaml(tmp_path: Path) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nexperiment: {key: x}\n", encoding="utf-8")
    return str(path)


# (arguments, a fragment of the message); "{bad}" is a YAML file that is not a valid definition
# or scenario, "{missing}" a path that does not exist.
CASES = [
    (("experiments", "show", "no-such-experiment"), "no-such-experiment"),
    (("experiments", "ramp", "no-such-experiment", "--coverage", "0.5"), "no-such-experiment"),
    (("experiments", "apply", "{bad}"), "invalid experiment definition:\n  key: Field required"),
    (("analyze", "no-such-experiment"), "no-such-experiment"),
    (("gate",), "give an experiment key or --all"),
    (("gate", "no-such-experiment"), "no-such-experiment"),
    (("keys", "revoke", "987654"), "no API key with id 987654"),
    (("vllm-command", "no-such-experiment"), "no-such-experiment"),
    (("vllm-command", "x", "--lora", "nopath"), "--lora: expected NAME=PATH"),
    (("feedback", "codebook", "rename", "nope", "Name"), "no theme 'nope'"),
    (("feedback", "shares", "--by", "ide"), "--by: must be 'arm' or 'language'"),
    (("feedback", "evaluate", "--labelled", "{missing}"), "--labelled: No such file"),
    (("simulate", "--scenario", "{bad}"), "--scenario:"),
    (("backtest", "-e", "no-such-experiment"), "no-such-experiment"),
    (("backtest", "-e", "x", "--format", "xml"), "--format: use table or json"),
    (("backtest", "-e", "x", "--triggers", "sideways"), "--triggers: unknown sideways"),
]


@pytest.mark.parametrize(("args", "fragment"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_user_error_is_one_line_on_stderr_and_exit_2(
    database_url: str, tmp_path: Path, args: tuple[str, ...], fragment: str
) -> None:
    bad, missing = _bad_yaml(tmp_path), str(tmp_path / "missing.jsonl")
    argv = [arg.format(bad=bad, missing=missing) for arg in args]
    result = run(database_url, *argv)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stderr.startswith("error: "), result.stderr
    # One error: its line, then (for a definition) each problem on an indented line of its own.
    assert all(line.startswith("  ") for line in result.stderr.splitlines()[1:]), result.stderr
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_the_installed_command_prints_no_traceback(database_url: str) -> None:
    env = os.environ | {"CODELIFT_DATABASE_URL": database_url}
    env.pop("DATABASE_URL", None)
    for args in (["gate"], ["experiments", "show", "no-such-experiment"]):
        done = subprocess.run(
            [str(CODELIFT), *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        assert "Traceback" not in done.stderr


def test_a_command_error_may_carry_another_exit_code() -> None:
    app = command_app("A group.")

    @app.command("fails")
    def fails() -> None:
        raise CommandError("the service did not start", code=FAILURE_EXIT)

    @app.command("other")
    def other() -> None:
        typer.echo("fine")

    result = CliRunner().invoke(app, ["fails"])
    assert result.exit_code == 1
    assert result.stderr == "error: the service did not start\n"
    assert CliRunner().invoke(app, ["other"]).stdout == "fine\n"


def test_typer_usage_errors_stay_typers() -> None:
    from codelift.cli import app

    result = CliRunner().invoke(app, ["experiments", "ramp", "some-key"])
    assert result.exit_code == 2
    assert "--coverage" in result.output


def test_importing_the_cli_loads_no_heavy_module() -> None:
    code = f"import sys, codelift.cli\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "", f"codelift.cli imports {done.stdout.strip()}"


def test_help_loads_no_heavy_module() -> None:
    # --help of a command resolves its options' types and defaults, nothing more.
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from codelift.cli import app\n"
        "for args in (['--help'], ['experiments', '--help'], ['analyze', '--help'],\n"
        "             ['backtest', '--help'], ['feedback', 'evaluate', '--help'],\n"
        "             ['keys', 'create', '--help']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "", f"--help imports {done.stdout.strip()}"


def test_refused_settings_are_one_line_naming_the_setting_and_exit_2() -> None:
    # Production (the default) refuses a well-known database password: the user reads which
    # setting and what to do, not a pydantic traceback, and never the password itself.
    result = subprocess.run(
        [str(CODELIFT), "db", "upgrade"],
        env={
            **os.environ,
            "CODELIFT_ENVIRONMENT": "production",
            "CODELIFT_DATABASE_URL": "postgresql://app:Postgres1@127.0.0.1:1/x",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: DatabaseSettings refused: database_url")
    assert "Traceback" not in result.stderr and "Postgres1" not in result.stderr
