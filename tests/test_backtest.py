"""``codelift backtest`` end to end: masked spans through a real gateway, figures per language,
rows in PostgreSQL; with an oracle backend (known answers) and with the real local engine."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from codelift.cli import app
from core.auth.scopes import Scope
from experiments.variants import PostProcess, Variant
from serving.backend import GenerationRequest
from serving.local.tokenizer import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX
from serving.scripted_backend import ScriptedBackend
from tests.apikeys import Key, MakeKey
from tests.database import PgConnection
from tests.experiment_factories import DEFAULT_VARIANT
from tests.servers import running_gateway
from tests.test_gateway import gateway_settings

EXPERIMENT = "backtest-e2e"
SOURCES = {
    "calc/ops.py": (
        "import math\n\n\n"
        "def area(radius):\n    squared = radius * radius\n    return math.pi * squared\n\n\n"
        "def mean(values):\n    total = sum(values)\n    return total / len(values)\n"
    ),
    "calc/text.py": (
        "def shout(word):\n    upper = word.upper()\n    return upper + '!'\n\n\n"
        "WORDS = ['alpha', 'beta', 'gamma']\nLOUD = [shout(w) for w in WORDS]\n"
    ),
    "web/app.js": (
        "function add(a, b) {\n  const sum = a + b;\n  return sum;\n}\n\n"
        "const items = [1, 2, 3].map((x) => add(x, 1));\nconsole.log(items.join(', '));\n"
    ),
    "web/util.js": (
        "export function clamp(x, low, high) {\n  if (x < low) {\n    return low;\n  }\n"
        "  return Math.min(x, high);\n}\n"
    ),
}


def oracle(request: GenerationRequest) -> str:
    """The hidden code itself. Every source is shorter than the context sent, so the prompt
    holds a whole file: its prefix starts the file and its suffix ends it."""
    prefix, _, rest = request.prompt.removeprefix(FIM_PREFIX).partition(FIM_SUFFIX)
    suffix = rest.removesuffix(FIM_MIDDLE)
    for text in SOURCES.values():
        if text.startswith(prefix) and text.endswith(suffix):
            return text[len(prefix) : len(text) - len(suffix)]
    raise AssertionError(f"no source starts with {prefix!r} and ends with {suffix!r}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for name, text in SOURCES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def experiment_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # "first-word" stops at the first space: restores short targets only.
    path = tmp_path_factory.mktemp("experiment") / "backtest.yaml"
    path.write_text(
        f"key: {EXPERIMENT}\n"
        "arms:\n"
        "  - {name: control, weight: 0.5}\n"
        "  - {name: first-word, weight: 0.25, variant: {decoding: {stop: [' ']}}}\n"
        "  - {name: greedy, weight: 0.25, variant: {decoding: {temperature: 0.0}}}\n"
        "primary_metrics: [acceptance_rate]\n"
    )
    return path


@pytest.fixture
def gateway_url(database_url: str) -> Iterator[str]:
    # No block trimming: it would cut an oracle's block that starts with a nested block.
    untrimmed = Variant(model=DEFAULT_VARIANT.model, postprocess=PostProcess(trim="none"))
    settings = gateway_settings(database_url, default_variant=untrimmed)
    with running_gateway(settings, {"local": ScriptedBackend(oracle, name="local")}) as url:
        yield url


@pytest.fixture
def runs(pg: PgConnection) -> Iterator[None]:
    """Delete the runs a test stored (samples and summaries go with them)."""
    yield
    pg.execute("DELETE FROM backtest_runs WHERE experiment_key = %s", (EXPERIMENT,))


def backtest(database_url: str, *args: str) -> Result:
    result = CliRunner().invoke(
        app,
        ["backtest", *args],
        env={"CODELIFT_DATABASE_URL": database_url, "DATABASE_URL": None},
    )
    gc.collect()  # engines the command opened must be closed by now
    return result


def summary(pg: PgConnection, run_id: int) -> dict[tuple[str, str, str], dict[str, Any]]:
    rows = pg.execute("SELECT * FROM backtest_summaries WHERE run_id = %s", (run_id,)).fetchall()
    return {(r["language"], r["metric"], r["arm"]): r for r in rows}


def latest_run(pg: PgConnection) -> dict[str, Any]:
    row = pg.execute(
        "SELECT * FROM backtest_runs WHERE experiment_key = %s ORDER BY id DESC LIMIT 1",
        (EXPERIMENT,),
    ).fetchone()
    assert row is not None
    return dict(row)


def test_backtest_through_a_running_gateway_compares_arms_per_language(
    database_url: str,
    gateway_url: str,
    corpus: Path,
    experiment_file: Path,
    make_key: MakeKey,
    pg: PgConnection,
    runs: None,
) -> None:
    key = make_key("backtest-cli", [Scope.SERVE, Scope.EVALUATE])
    args = [
        "--experiment", str(experiment_file), "--arms", "control,first-word",
        "--corpus", str(corpus), "--samples", "8", "--seed", "5", "--resamples", "300",
        "--gateway-url", gateway_url, "--api-key", key.secret,
    ]  # fmt: skip
    result = backtest(database_url, *args)
    assert result.exit_code == 0, result.output
    table = result.stdout
    assert "arms control, first-word (baseline control)" in table
    for language in ("python", "javascript", "all"):
        assert any(line.startswith(f"{language} ") and "exact match" in line
                   for line in table.splitlines())  # fmt: skip

    run = latest_run(pg)
    assert run["baseline_arm"] == "control" and run["gateway"] == gateway_url
    assert run["arms"] == {"control": {}, "first-word": {"decoding": {"stop": [" "]}}}
    assert run["languages"] == ["javascript", "python"]
    samples = pg.execute(
        "SELECT arm, count(*) AS n, bool_and(error IS NULL) AS ok FROM backtest_samples"
        " WHERE run_id = %s GROUP BY arm ORDER BY arm",
        (run["id"],),
    ).fetchall()
    assert [(s["arm"], s["n"], s["ok"]) for s in samples] == [
        ("control", 16, True),
        ("first-word", 16, True),
    ]
    figures = summary(pg, run["id"])
    # The oracle restores every span; cutting at the first space cannot restore those with one.
    assert figures[("all", "exact_match", "control")]["value"] == 1.0
    assert figures[("all", "chrf", "control")]["value"] == 1.0
    worse = figures[("all", "exact_match", "first-word")]
    assert worse["value"] < 1.0 and worse["diff"] < 0 and worse["diff_high"] < 0
    assert worse["p_value"] < 0.05
    assert figures[("python", "exact_match", "first-word")]["n"] == 8
    assert figures[("all", "latency_p95_ms", "control")]["value"] > 0

    # The same seed gives the same samples, completions and text figures.
    again = backtest(database_url, *args)
    assert again.exit_code == 0, again.output
    rerun = latest_run(pg)
    assert rerun["id"] != run["id"]
    texts = "SELECT arm, sample_index, path, span_start, completion, chrf FROM backtest_samples" \
        " WHERE run_id = %s ORDER BY arm, sample_index"  # fmt: skip
    assert (
        pg.execute(texts, (run["id"],)).fetchall() == pg.execute(texts, (rerun["id"],)).fetchall()
    )
    rerun_figures = summary(pg, rerun["id"])
    for (language, metric, arm), row in figures.items():
        if not metric.startswith("latency"):
            again_row = rerun_figures[(language, metric, arm)]
            assert (row["value"], row["ci_low"], row["diff"]) == (
                again_row["value"], again_row["ci_low"], again_row["diff"],
            )  # fmt: skip


def test_a_key_without_the_evaluate_scope_stops_the_backtest(
    database_url: str,
    gateway_url: str,
    corpus: Path,
    experiment_file: Path,
    serve_only_key: Key,
    runs: None,
) -> None:
    result = backtest(
        database_url,
        *("--experiment", str(experiment_file), "--corpus", str(corpus), "--samples", "2"),
        *("--gateway-url", gateway_url, "--api-key", serve_only_key.secret),
    )
    assert result.exit_code == 2
    assert "HTTP 403" in result.stderr and "'evaluate'" in result.stderr


def test_bad_arguments_are_named(database_url: str, corpus: Path, experiment_file: Path) -> None:
    result = backtest(database_url, "--experiment", str(experiment_file), "--arms", "control,nope")
    assert result.exit_code == 2 and "nope not in experiment" in result.output
    result = backtest(database_url, "--experiment", "no-such-experiment")
    assert result.exit_code == 2 and "no-such-experiment" in result.output
    result = backtest(
        database_url, "--experiment", str(experiment_file), "--corpus", str(corpus),
        "--languages", "cobol",
    )  # fmt: skip
    assert result.exit_code == 2 and "no file to mask" in result.output


def test_backtest_on_the_local_engine_in_process(
    database_url: str, corpus: Path, experiment_file: Path, pg: PgConnection, runs: None
) -> None:
    result = backtest(
        database_url,
        *("--experiment", str(experiment_file), "--arms", "control,greedy"),
        *("--corpus", str(corpus), "--languages", "python", "--samples", "3"),
        *("--resamples", "200", "--format", "json"),
    )
    assert result.exit_code == 0, result.output
    assert "in-process" in result.stderr
    run = latest_run(pg)
    assert run["gateway"] == "in-process" and run["languages"] == ["python"]
    rows = pg.execute(
        "SELECT count(*) AS n, count(latency_ms) AS timed, bool_and(error IS NULL) AS ok"
        " FROM backtest_samples WHERE run_id = %s",
        (run["id"],),
    ).fetchone()
    assert rows is not None and (rows["n"], rows["timed"], rows["ok"]) == (6, 6, True)
