"""``codelift experiments …`` against the test database.

The commands commit, so each test deletes the experiments (and audit rows) it made.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from codelift.cli import app
from core.db.connection import make_engine
from experiments.definitions.models import Experiment
from experiments.definitions.registry import CHANNEL, audit_log, registry_version
from tests.database import PgConnection, connect
from tests.experiment_definitions import arms, definition

EXAMPLE = Path(__file__).parent.parent / "examples" / "experiments" / "lora-python.yaml"
ACTOR = "test:cli"


class Cli:
    """Runs ``codelift experiments …`` on the test database and remembers keys to delete."""

    def __init__(self, database_url: str, tmp_path: Path) -> None:
        self.database_url = database_url
        self.tmp_path = tmp_path
        self.keys: set[str] = set()

    def __call__(self, *args: str) -> Result:
        result = CliRunner().invoke(
            app,
            ["experiments", *args],
            env={"CODELIFT_DATABASE_URL": self.database_url, "DATABASE_URL": None},
        )
        gc.collect()  # the commands open engines of their own; make any left open show here
        return result

    def write(self, name: str, data: dict[str, Any]) -> Path:
        """Write ``data`` as a YAML definition file; its key is cleaned up after the test."""
        self.keys.add(data["key"])
        path = self.tmp_path / name
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return path

    def apply(self, data: dict[str, Any], *extra: str) -> Result:
        return self("apply", str(self.write(f"{data['key']}.yaml", data)), *extra)


@pytest.fixture
def cli(database_url: str, pg: PgConnection, tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(database_url, tmp_path)
    yield runner
    keys = sorted(runner.keys)
    pg.execute("DELETE FROM experiments WHERE key = ANY(%s)", (keys,))
    pg.execute("DELETE FROM experiment_audit WHERE experiment_key = ANY(%s)", (keys,))


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    """An ORM session that sees what the CLI committed."""
    engine = make_engine(database_url, pool_size=1)
    with Session(engine) as session:
        yield session
    engine.dispose()


def stored(session: Session, key: str) -> Experiment | None:
    session.expire_all()
    return session.scalar(select(Experiment).where(Experiment.key == key))


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def refused(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: "), result.stderr
    return result.stderr


# --- apply ----------------------------------------------------------------------------------


def test_apply_the_example(cli: Cli, session: Session) -> None:
    cli.keys.add("lora-python")
    out = ok(cli("apply", str(EXAMPLE), "--actor", ACTOR))
    assert out.strip() == "created lora-python (running, coverage 0.01)"
    experiment = stored(session, "lora-python")
    assert experiment is not None
    assert (experiment.status, experiment.layer, experiment.coverage) == (
        "running",
        "completion-model",
        0.01,
    )
    assert [(a.name, a.weight) for a in experiment.arms] == [("control", 0.5), ("lora", 0.5)]
    [entry] = audit_log(session, key="lora-python")
    assert (entry.action, entry.actor) == ("create", ACTOR)

    again = ok(cli("apply", str(EXAMPLE), "--actor", ACTOR))
    assert again.strip() == "lora-python unchanged"
    assert len(audit_log(session, key="lora-python")) == 1


def test_apply_a_toml_file_then_an_edit(cli: Cli, session: Session, tmp_path: Path) -> None:
    cli.keys.add("cli-toml")
    path = tmp_path / "exp.toml"
    text = """\
key = "cli-toml"
layer = "cli-toml-layer"
primary_metrics = ["acceptance_rate"]

[[arms]]
name = "control"
weight = 0.5

[[arms]]
name = "greedy"
weight = 0.5
variant = { decoding = { temperature = 0.0 } }
"""
    path.write_text(text, encoding="utf-8")
    assert ok(cli("apply", str(path))).strip() == "created cli-toml (draft, coverage 1)"
    experiment = stored(session, "cli-toml")
    assert experiment is not None
    assert experiment.arms[1].variant == {"decoding": {"temperature": 0.0}}

    path.write_text('description = "greedy decoding"\n' + text, encoding="utf-8")
    assert ok(cli("apply", str(path))).strip() == "updated cli-toml: description"
    # Without --actor the OS user is recorded.
    entry = audit_log(session, key="cli-toml")[0]
    assert entry.action == "update"
    assert entry.actor.startswith("cli:")


def test_apply_an_invalid_file_names_the_problem(cli: Cli, session: Session) -> None:
    data = definition("cli-invalid", arms=arms(0.5, 0.6), primary_metrics=["acceptance_rat"])
    err = refused(cli.apply(data))
    assert "invalid experiment definition" in err
    assert "arms: arm weights must sum to 1, they sum to 1.1" in err
    assert "primary_metrics: unknown metric 'acceptance_rat'" in err
    assert stored(session, "cli-invalid") is None


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("broken.yaml", "key: [unclosed\n", "not valid YAML"),
        ("broken.toml", "key = \n", "not valid TOML"),
        ("exp.json", "{}", "use a .yaml, .yml or .toml file"),
    ],
)
def test_apply_an_unreadable_file(
    cli: Cli, tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert message in refused(cli("apply", str(path)))


def test_apply_a_directory(cli: Cli, tmp_path: Path) -> None:
    assert "cannot read it as UTF-8 text" in refused(cli("apply", str(tmp_path)))


def test_apply_a_missing_file(cli: Cli, tmp_path: Path) -> None:
    result = cli("apply", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2
    assert "Invalid value for 'path'" in result.output


def test_apply_refuses_a_second_experiment_on_the_same_traffic(cli: Cli, session: Session) -> None:
    ok(cli.apply(definition("cli-first", status="running", layer="cli-layer")))
    err = refused(cli.apply(definition("cli-second", status="running", layer="cli-layer")))
    assert "layer 'cli-layer': 'cli-first' is running there" in err
    assert stored(session, "cli-second") is None
    # Another layer is fine.
    out = ok(cli.apply(definition("cli-second", status="running", layer="cli-other-layer")))
    assert out.startswith("created cli-second (running")


def test_apply_refuses_to_change_arms_while_running(cli: Cli, session: Session) -> None:
    ok(cli.apply(definition("cli-frozen", status="running", layer="cli-layer")))
    changed = definition("cli-frozen", status="running", layer="cli-layer", arms=arms(0.4, 0.6))
    err = refused(cli.apply(changed))
    assert "arms: cannot change while 'cli-frozen' is running" in err
    experiment = stored(session, "cli-frozen")
    assert experiment is not None
    assert [a.weight for a in experiment.arms] == [0.5, 0.5]


def test_apply_writes_notify_for_listeners(cli: Cli, database_url: str, session: Session) -> None:
    with connect(database_url) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        ok(cli.apply(definition("cli-notify", layer="cli-layer")))
        payloads = [n.payload for n in listener.notifies(timeout=5.0, stop_after=1)]
    assert payloads == [str(registry_version(session))]


# --- list and show --------------------------------------------------------------------------


def test_list(cli: Cli) -> None:
    ok(cli.apply(definition("cli-list-a", status="running", layer="cli-layer", coverage=0.25)))
    ok(cli.apply(definition("cli-list-b", layer="cli-layer", arms=arms(0.2, 0.3, 0.5))))
    lines = {line.split()[0]: line for line in ok(cli("list")).splitlines()}
    assert re.match(
        r"cli-list-a\s+running\s+layer=cli-layer\s+coverage=0.25\s+arms: control 0.5, lora 0.5$",
        lines["cli-list-a"],
    )
    assert lines["cli-list-b"].split()[1] == "draft"
    assert lines["cli-list-b"].endswith("arms: control 0.2, t1 0.3, t2 0.5")

    only_running = ok(cli("list", "--status", "running"))
    assert "cli-list-a" in only_running
    assert "cli-list-b" not in only_running


def test_list_refuses_an_unknown_status(cli: Cli) -> None:
    result = cli("list", "--status", "live")
    assert result.exit_code == 2
    assert "live" in result.output


def test_show_prints_the_definition_and_history(cli: Cli) -> None:
    ok(cli.apply(definition("cli-show", status="running", layer="cli-layer"), "--actor", ACTOR))
    ok(cli("ramp", "cli-show", "--coverage", "0.25", "--actor", ACTOR, "--reason", "stage met"))
    out = ok(cli("show", "cli-show"))
    shown, end = json.JSONDecoder().raw_decode(out)
    assert shown["key"] == "cli-show"
    assert shown["status"] == "running"
    assert shown["coverage"] == 0.25
    assert shown["seed"] == "cli-show"
    assert [arm["name"] for arm in shown["arms"]] == ["control", "lora"]
    assert shown["rollout"]["stages"][0]["min_duration_s"] == 3600.0
    rest = out[end:].strip().splitlines()
    assert re.match(
        r"created \d{4}-\d\d-\d\d \d\d:\d\d, updated \d{4}-\d\d-\d\d \d\d:\d\d$", rest[0]
    )
    assert re.search(r"ramp\s+by test:cli \(stage met\)$", rest[1])
    assert re.search(r"create\s+by test:cli$", rest[2])
    assert len(rest) == 3

    limited = ok(cli("show", "cli-show", "--history", "1"))
    assert "ramp" in limited
    assert "create " not in limited.split("updated", 1)[1]


def test_show_an_unknown_key(cli: Cli) -> None:
    assert "no experiment with key 'cli-nope'" in refused(cli("show", "cli-nope"))


# --- status and ramp ------------------------------------------------------------------------


def test_status_commands(cli: Cli, session: Session) -> None:
    ok(cli.apply(definition("cli-status", layer="cli-layer")))
    assert ok(cli("start", "cli-status")).strip() == "cli-status is running"
    assert ok(cli("pause", "cli-status", "--reason", "latency")).strip() == "cli-status is paused"
    assert ok(cli("start", "cli-status")).strip() == "cli-status is running"
    assert ok(cli("ship", "cli-status", "--actor", ACTOR)).strip() == "cli-status is shipped"
    entries = audit_log(session, key="cli-status")
    assert [e.action for e in reversed(entries)] == [
        "create",
        "running",
        "paused",
        "running",
        "shipped",
    ]
    assert entries[2].reason == "latency"
    assert entries[0].actor == ACTOR
    experiment = stored(session, "cli-status")
    assert experiment is not None
    assert experiment.ended_at is not None

    err = refused(cli("start", "cli-status"))
    assert "status: 'cli-status' is shipped; it can go to nothing (it is final), not running" in err


def test_status_refusals(cli: Cli) -> None:
    ok(cli.apply(definition("cli-refuse", layer="cli-layer")))
    err = refused(cli("pause", "cli-refuse"))
    assert "'cli-refuse' is draft; it can go to running, stopped, not paused" in err
    assert ok(cli("stop", "cli-refuse")).strip() == "cli-refuse is stopped"
    assert "it is final" in refused(cli("ship", "cli-refuse"))
    assert "no experiment with key 'cli-nope'" in refused(cli("stop", "cli-nope"))


def test_start_refuses_a_layer_conflict(cli: Cli) -> None:
    ok(cli.apply(definition("cli-live", status="running", layer="cli-layer")))
    ok(cli.apply(definition("cli-waiting", layer="cli-layer")))
    err = refused(cli("start", "cli-waiting"))
    assert "'cli-live' is running there" in err
    assert ok(cli("stop", "cli-live")).strip() == "cli-live is stopped"
    assert ok(cli("start", "cli-waiting")).strip() == "cli-waiting is running"


def test_ramp(cli: Cli, session: Session) -> None:
    ok(cli.apply(definition("cli-ramp", status="running", layer="cli-layer")))
    for coverage in ("0.05", "0.25", "0.5", "1"):
        out = ok(cli("ramp", "cli-ramp", "--coverage", coverage))
        assert out.strip() == f"cli-ramp coverage {float(coverage):g}"
    experiment = stored(session, "cli-ramp")
    assert experiment is not None
    assert experiment.coverage == 1.0
    ramps = [e for e in audit_log(session, key="cli-ramp") if e.action == "ramp"]
    assert len(ramps) == 4


def test_ramp_refusals(cli: Cli) -> None:
    ok(cli.apply(definition("cli-ramp-bad", status="running", layer="cli-layer")))
    assert "coverage must be between 0 and 1, got 1.5" in refused(
        cli("ramp", "cli-ramp-bad", "--coverage", "1.5")
    )
    assert "no experiment with key 'cli-nope'" in refused(
        cli("ramp", "cli-nope", "--coverage", "0.5")
    )
    ok(cli("stop", "cli-ramp-bad"))
    assert "only a live or draft experiment ramps" in refused(
        cli("ramp", "cli-ramp-bad", "--coverage", "0.5")
    )
    missing = cli("ramp", "cli-ramp-bad")
    assert missing.exit_code == 2
    assert "--coverage" in missing.output
