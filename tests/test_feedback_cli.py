"""``codelift feedback …`` against the test database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedback.dataset import load_labelled
from tests.database import PgConnection
from tests.test_cli import run


@pytest.fixture
def cleanup_theme(pg: PgConnection) -> Iterator[str]:
    """The id of a theme a test adds through the CLI; removed with its history afterwards."""
    yield "pricing"
    pg.execute("DELETE FROM feedback_theme_history WHERE theme_id = 'pricing'")
    pg.execute("DELETE FROM feedback_themes WHERE id = 'pricing'")


def test_codebook_add_rename_and_list(database_url: str, cleanup_theme: str) -> None:
    added = run(
        database_url,
        "feedback", "codebook", "add", cleanup_theme,
        "--name", "Pricing", "--description", "Cost of the product.",
        "--example", "too expensive", "--actor", "ana",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    renamed = run(database_url, "feedback", "codebook", "rename", cleanup_theme, "Price / cost")
    assert renamed.exit_code == 0, renamed.output
    listed = run(database_url, "feedback", "codebook", "list")
    assert "Price / cost" in listed.output and "Latency / slow" in listed.output
    again = run(
        database_url,
        "feedback", "codebook", "add", cleanup_theme, "--name", "X", "--description", "d",
    )  # fmt: skip
    assert again.exit_code == 2 and "theme_id: theme 'pricing' already exists" in again.output


def test_merging_an_unknown_theme_fails_cleanly(database_url: str) -> None:
    result = run(database_url, "feedback", "codebook", "merge", "nope", "latency")
    assert result.exit_code == 2 and "no theme 'nope'" in result.output


def test_evaluate_prints_both_modes_on_a_small_fixed_set(database_url: str, tmp_path: Path) -> None:
    per_theme: dict[str, int] = {}
    lines = []
    for example in load_labelled():
        first = example.theme_ids[0]
        if per_theme.get(first, 0) < 2:
            per_theme[first] = per_theme.get(first, 0) + 1
            lines.append(
                json.dumps(
                    {
                        "text": example.comment.text,
                        "rating": example.comment.rating,
                        "rating_scale": example.comment.rating_scale,
                        "themes": list(example.theme_ids),
                        "polarity": example.polarity,
                    }
                )
            )
    path = tmp_path / "small.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = run(
        database_url, "feedback", "evaluate", "--labelled", str(path), "--folds", "2", "--json"
    )
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)
    assert [r["mode"] for r in reports] == ["codebook only", "with learning"]
    assert all(r["comments"] == 26 for r in reports)
    assert reports[1]["folds"] == 2
    assert set(reports[0]["per_theme"]) == set(per_theme)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"text": "x", "rating_scale": "stars", "themes": ["nope"], "polarity": "positive"}\n'
    )
    failed = run(database_url, "feedback", "evaluate", "--labelled", str(bad))
    assert failed.exit_code == 2 and "not in the codebook" in failed.output
