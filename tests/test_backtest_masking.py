"""Where the backtest hides code (triggers, spans, sampling) and which files it reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from backtest import source_files as data
from backtest.corpus import CorpusFile, directory_corpus, held_out_corpus
from backtest.masking import MAX_BLOCK_LINES, Trigger, lines_of, mask, sample_spans, spans

PY = "def add(a, b):\n    total = a + b\n    return total  \n\nx = add(1, 2)\n"
C = "int one(void) {\n    return 1;\n}\n"


def targets(text: str, trigger: Trigger) -> list[str]:
    return [text[start:end] for start, end in spans(text, trigger)]


def test_lines_know_where_their_code_starts() -> None:
    lines = lines_of(PY)
    assert [(line.start, line.code_start, line.end) for line in lines[:2]] == [
        (0, 0, 14),
        (15, 19, 32),
    ]
    assert lines[3].blank and not lines[1].blank and lines[1].indent == 4


def test_whole_line_hides_each_lines_code_after_its_indentation() -> None:
    assert targets(PY, Trigger.WHOLE_LINE) == [
        "def add(a, b):",
        "total = a + b",
        "return total",  # trailing spaces are not part of the target
        "x = add(1, 2)",
    ]


def test_after_bracket_hides_the_rest_of_the_line_after_an_opening_bracket() -> None:
    assert targets(PY, Trigger.AFTER_BRACKET) == ["a, b):", "1, 2)"]
    assert targets(C, Trigger.AFTER_BRACKET) == ["void) {"]


def test_end_of_line_hides_the_rest_of_a_line_from_inside_its_code() -> None:
    found = targets(PY, Trigger.END_OF_LINE)
    assert "otal = a + b" in found and "b" in found and "add(1, 2)" in found
    # Never the whole code of a line (that is whole_line), never an empty or all-blank rest.
    assert "total = a + b" not in found and all(t.strip() for t in found)
    # Every cursor inside every line's code: 13 + 12 + 11 + 12 positions.
    assert len(found) == 48


def test_block_hides_the_body_of_a_block_opener() -> None:
    assert targets(PY, Trigger.BLOCK) == ["total = a + b\n    return total"]
    assert targets(C, Trigger.BLOCK) == ["return 1;"]
    long_body = "if x:\n" + "".join(f"    y{i} = {i}\n" for i in range(MAX_BLOCK_LINES + 1))
    assert targets(long_body, Trigger.BLOCK) == []
    nested = "class A:\n    def f(self):\n        return 1\n\n    def g(self):\n        pass\n"
    assert targets(nested, Trigger.BLOCK) == [
        "def f(self):\n        return 1\n\n    def g(self):\n        pass",
        "return 1",
        "pass",
    ]


def test_mask_keeps_prefix_and_suffix_within_their_limits() -> None:
    file = CorpusFile("m.py", "python", PY)
    start, end = spans(PY, Trigger.BLOCK)[0]
    whole = mask(file, start, end, trigger=Trigger.BLOCK)
    assert whole.prefix + whole.target + whole.suffix == PY
    assert whole.prefix.endswith("):\n    ") and whole.suffix.startswith("  \n\nx")
    cut = mask(file, start, end, trigger=Trigger.BLOCK, prefix_chars=5, suffix_chars=3)
    assert (cut.prefix, cut.target, cut.suffix) == ("\n    ", whole.target, "  \n")


def _files() -> list[CorpusFile]:
    py = [CorpusFile(f"pkg/m{i}.py", "python", PY.replace("add", f"add{i}")) for i in range(4)]
    return [*py, CorpusFile("lib/one.c", "c", C)]


def test_sampling_is_deterministic_for_a_seed() -> None:
    first = sample_spans(_files(), samples_per_language=6, seed=3)
    assert sample_spans(_files(), samples_per_language=6, seed=3) == first
    assert sample_spans(_files(), samples_per_language=6, seed=4) != first
    assert [s.index for s in first] == list(range(len(first)))


def test_triggers_take_turns_and_samples_are_never_repeated() -> None:
    python = sample_spans(_files(), samples_per_language=8, seed=1)
    kinds = [s.trigger for s in python if s.language == "python"]
    assert kinds == [*Trigger, *Trigger]
    keys = [(s.path, s.start, s.end) for s in python]
    assert len(set(keys)) == len(keys)


def test_a_language_running_out_of_spans_gives_fewer_samples() -> None:
    c_spans = [
        s for s in sample_spans(_files(), samples_per_language=50, seed=1) if s.language == "c"
    ]
    # Every span of every trigger, each once (a span two triggers share counts once).
    expected = {span for trigger in Trigger for span in spans(C, trigger)}
    assert sorted((s.start, s.end) for s in c_spans) == sorted(expected)


def test_another_languages_files_do_not_change_a_languages_samples() -> None:
    python_only = [f for f in _files() if f.language == "python"]
    alone = sample_spans(python_only, samples_per_language=6, seed=9)
    together = [
        s for s in sample_spans(_files(), samples_per_language=6, seed=9) if s.language == "python"
    ]
    strip = [dataclasses.replace(s, index=0) for s in alone]
    assert strip == [dataclasses.replace(s, index=0) for s in together]


def test_sampling_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="samples"):
        sample_spans(_files(), samples_per_language=0, seed=0)
    with pytest.raises(ValueError, match="trigger"):
        sample_spans(_files(), samples_per_language=1, seed=0, triggers=())


def test_directory_corpus_reads_source_files_by_extension(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text(PY)
    (tmp_path / "src" / "b.js").write_text("const x = f(1);\n")
    (tmp_path / "notes.txt").write_text("not code\n")
    (tmp_path / "bin.py").write_bytes(b"x = 1\0\n")  # NUL: not source
    (tmp_path / "latin.py").write_bytes("s = 'é'\n".encode("latin-1"))  # not UTF-8
    (tmp_path / "wide.py").write_text("x = " + "1" * (data.MAX_LINE_BYTES + 1) + "\n")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "dep.js").write_text("module.exports = 1;\n")
    files = directory_corpus(tmp_path)
    assert [(f.path, f.language) for f in files] == [
        ("src/a.py", "python"),
        ("src/b.js", "javascript"),
    ]
    assert files[0].text == PY
    assert [f.path for f in directory_corpus(tmp_path, ["javascript"])] == ["src/b.js"]
    with pytest.raises(NotADirectoryError, match="not a directory"):
        directory_corpus(tmp_path / "missing")


def test_held_out_corpus_is_the_training_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Files until one is held out and one is not, by the training's own rule.
    held: list[str] = []
    kept: list[str] = []
    i = 0
    while len(held) < 2 or not kept:
        text = f"value_{i} = {i}\n"
        (tmp_path / f"m{i}.py").write_text(text)
        (held if data.is_held_out(text.encode()) else kept).append(f"m{i}.py")
        i += 1
    languages = [data.Language("python", (".py",), (str(tmp_path),), 10**6)]
    monkeypatch.setattr(data, "default_languages", lambda: languages)
    files = held_out_corpus(["python"])
    assert sorted(Path(f.path).name for f in files) == sorted(held)
    assert held_out_corpus(["c"]) == []
