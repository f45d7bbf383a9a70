"""The layering contracts (pyproject.toml, ``[tool.importlinter]``) hold, and would catch a break.

``make check`` runs ``lint-imports`` on the tree; these tests show the contracts are not vacuous:
a deliberate bad import in a copy of the tree breaks them, and no two sub-packages of any package
import each other (the contracts only order the top level and experiments/).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "codelift",
    "core",
    "collector",
    "experiments",
    "serving",
    "training",
    "backtest",
    "feedback",
    "dashboard",
    "simulator",
    "migrations",
    "bench",
)
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(to: Path) -> None:
    """The packages' Python sources and pyproject.toml, without data files or checkpoints."""
    shutil.copy(ROOT / "pyproject.toml", to / "pyproject.toml")
    for package in PACKAGES:
        for source in (ROOT / package).rglob("*.py"):
            target = to / source.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_contracts_hold_on_the_tree() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        # The core importing a feature.
        ("core/settings.py", "import collector.main", "core → features → composition root"),
        # A feature importing the composition root.
        ("experiments/definitions/config.py", "import codelift.cli", "composition root"),
        # A feature importing the simulator.
        ("dashboard/data.py", "import simulator.scenario", "composition root"),
        # The gateway reaching past the assignment part of experiments.
        (
            "serving/gateway/serving.py",
            "import experiments.analysis.analyze",
            "serving imports only the assignment part",
        ),
        # Assignment importing analysis (independent siblings).
        ("experiments/assignment/service.py", "import experiments.analysis.rollups", "experiments"),
    ],
)
def test_a_bad_import_breaks_a_contract(
    tmp_path: Path, module: str, bad_import: str, contract: str
) -> None:
    _copy_tree(tmp_path)
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{bad_import}  # deliberately against the layers\n")
    result = _lint(tmp_path)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), result.stdout
    assert bad_import.split()[-1] in result.stdout


def test_no_two_sub_packages_import_each_other() -> None:
    graph = grimp.build_graph(*PACKAGES)
    cycles = []
    for package in sorted(m for m in graph.modules if graph.find_children(m)):
        children = sorted(c for c in graph.find_children(package) if graph.find_children(c))
        for a, b in itertools.combinations(children, 2):
            if graph.chain_exists(a, b, as_packages=True) and graph.chain_exists(
                b, a, as_packages=True
            ):
                cycles.append((a, b))
    assert cycles == []
