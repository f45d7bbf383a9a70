"""The shipped labelled set keeps its promises, and a malformed file is refused line by line."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from feedback.dataset import (
    LabelledSetError,
    load_labelled,
    load_real,
    load_written,
    parse_labelled,
)
from feedback.models import POLARITIES
from tests.test_feedback_store import SEEDED

DATASHEET = Path(__file__).parents[1] / "feedback" / "data" / "DATASHEET.md"


def test_the_real_set_is_large_varied_and_split_by_source() -> None:
    real = load_real()
    assert len(real) >= 600
    assert {e.split for e in real} == {"train", "test"}
    by_split: dict[str, set[str]] = {"train": set(), "test": set()}
    for example in real:
        assert example.split is not None
        by_split[example.split].add(example.source)
    # No thread or page on both sides: the untouched split measures unseen sources.
    assert not by_split["train"] & by_split["test"]
    assert 0.15 <= sum(e.split == "test" for e in real) / len(real) <= 0.3
    assert {t for e in real for t in e.theme_ids} == SEEDED
    assert set(Counter(e.polarity for e in real)) == set(POLARITIES)
    assert all(e.primary in e.theme_ids and 1 <= len(e.theme_ids) <= 3 for e in real)
    # Paraphrased and anonymised: no addresses or handles, at most about 300 characters.
    assert not [e for e in real if re.search(r"https?://|www\.|@\w", e.comment.text)]
    assert max(len(e.comment.text) for e in real) <= 320
    # Real comments carry no rating; the written extras do, and never take part in a split.
    assert all(e.comment.rating is None for e in real)
    written = load_written()
    assert written and all(e.split is None for e in written)
    assert len(load_labelled()) == len(real) + len(written)


def test_the_datasheet_counts_what_is_shipped() -> None:
    real = load_real()
    sheet = DATASHEET.read_text()
    assert f"{len(real)} comments from {len({e.source for e in real})} sources" in sheet


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 1: not JSON"),
        ('{"text": "", "themes": ["latency"], "polarity": "negative"}', "'text'"),
        ('{"text": "slow", "themes": [], "polarity": "negative"}', "'themes'"),
        ('{"text": "slow", "themes": ["a", "b", "c", "d"], "polarity": "negative"}', "'themes'"),
        (
            '{"text": "slow", "themes": ["latency"], "primary": "speed", "polarity": "negative"}',
            "'primary'",
        ),
        ('{"text": "slow", "themes": ["latency"], "polarity": "mixed"}', "'polarity'"),
        (
            '{"text": "slow", "themes": ["latency"], "polarity": "neutral", "split": "dev"}',
            "'split'",
        ),
        (
            '{"text": "slow", "themes": ["latency"], "polarity": "neutral", "rating": "5"}',
            "'rating'",
        ),
    ],
)
def test_a_malformed_line_is_refused_naming_line_and_field(line: str, message: str) -> None:
    good = '{"text": "fine", "themes": ["speed"], "polarity": "positive"}'
    with pytest.raises(LabelledSetError) as caught:
        parse_labelled(f"{good}\n\n{line}\n", "set.jsonl")
    assert "set.jsonl:3" in str(caught.value) and message.replace("line 1: ", "") in str(
        caught.value
    )


def test_primary_defaults_to_the_first_theme_and_source_to_the_line() -> None:
    (example,) = parse_labelled(
        '{"text": "fast", "themes": ["latency", "speed"], "polarity": "positive"}', "x.jsonl"
    )
    assert (example.primary, example.source, example.split) == ("latency", "x.jsonl:1", None)
