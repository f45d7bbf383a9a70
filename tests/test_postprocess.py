"""Post-processing: stop strings, block and line trimming, suffix repeats, and streaming."""

from __future__ import annotations

import pytest

from experiments.variants import PostProcess
from serving.postprocess import (
    StreamingPostprocessor,
    cut_at_stop,
    postprocess,
    repeats_suffix,
    trim_to_block,
    trim_to_lines,
)

BLOCK = PostProcess(trim="block", drop_if_repeats_suffix=True)


def test_cut_at_the_earliest_stop_string() -> None:
    assert cut_at_stop("abc<EOT>def\n\nx", ("\n\n", "<EOT>")) == ("abc", True)
    assert cut_at_stop("abc", ("<EOT>",)) == ("abc", False)


def test_block_trim_stops_where_the_python_function_ends() -> None:
    prefix = "def add(a, b):\n"
    text = "    total = a + b\n    return total\n\ndef other():\n    pass\n"
    assert trim_to_block(prefix, text) == "    total = a + b\n    return total"


def test_block_trim_after_an_opener_keeps_the_body_only() -> None:
    prefix = "for x in xs:"
    text = "\n    print(x)\n    y += x\nprint(y)\n"
    assert trim_to_block(prefix, text) == "\n    print(x)\n    y += x"


def test_block_trim_keeps_the_closing_brace() -> None:
    prefix = "function f(a) {"
    text = "\n  if (a) {\n    return 1;\n  }\n  return 0;\n}\n\nfunction g() {}\n"
    assert trim_to_block(prefix, text) == "\n  if (a) {\n    return 1;\n  }\n  return 0;\n}"


def test_block_trim_keeps_sibling_statements_of_the_enclosing_block() -> None:
    prefix = "def f():\n    x = 1\n    "
    text = "y = 2\n    return x + y\nz = 3"
    assert trim_to_block(prefix, text) == "y = 2\n    return x + y"


def test_block_trim_leaves_single_lines_and_unfinished_blocks_alone() -> None:
    assert trim_to_block("x = ", "compute(1)") == "compute(1)"
    assert trim_to_block("def f():\n", "    a = 1\n    b = 2\n") == "    a = 1\n    b = 2\n"


def test_line_trim() -> None:
    assert trim_to_lines("a\nb\nc\nd", 2) == "a\nb"
    assert trim_to_lines("a\nb", 2) == "a\nb"


@pytest.mark.parametrize(
    ("text", "suffix", "expected"),
    [
        ("return x", "\n    return x\n", True),
        ("  ", "return x", False),
        ("return y", "return x", False),
        (")", ")\n", True),
    ],
)
def test_repeats_suffix(text: str, suffix: str, expected: bool) -> None:
    assert repeats_suffix(text, suffix) is expected


def test_postprocess_applies_stop_then_trim_then_drop() -> None:
    done = postprocess(
        "    return a\nprint()<EOT>junk",
        prefix="def f(a):\n",
        suffix="",
        stop=("<EOT>",),
        rules=BLOCK,
    )
    assert done.text == "    return a" and done.stopped and done.trimmed and not done.dropped
    dropped = postprocess("x)", prefix="f(", suffix="x)\n", stop=(), rules=BLOCK)
    assert dropped.text == "" and dropped.dropped


def test_postprocess_none_keeps_everything() -> None:
    rules = PostProcess(trim="none", drop_if_repeats_suffix=False)
    done = postprocess("a\nb\nc", prefix="", suffix="a", stop=(), rules=rules)
    assert done.text == "a\nb\nc" and not done.dropped


CASES = [
    (
        "def add(a, b):\n",
        "    total = a + b\n    return total\n\ndef other():\n    pass\n",
        "",
        BLOCK,
    ),
    ("function f(a) {", "\n  return a;\n}\nfunction g() {}\n", "", BLOCK),
    ("x = ", "compute(1)<EOT>more", "", BLOCK),
    ("f(", "x)", "x)\n", BLOCK),
    ("f(", "y)", "x)\n", BLOCK),
    ("", "a\nb\nc\nd\n", "", PostProcess(trim="lines", max_lines=2)),
    ("", "a<E", "", PostProcess(trim="none")),
    ("", "text ending <EO", "", PostProcess(trim="none")),
]


@pytest.mark.parametrize(("prefix", "text", "suffix", "rules"), CASES)
@pytest.mark.parametrize("piece", [1, 2, 3, 7, 1000])
def test_streaming_releases_exactly_what_the_whole_text_gives(
    prefix: str, text: str, suffix: str, rules: PostProcess, piece: int
) -> None:
    stop = ("<EOT>",)
    expected = postprocess(text, prefix=prefix, suffix=suffix, stop=stop, rules=rules).text
    stream = StreamingPostprocessor(prefix=prefix, suffix=suffix, stop=stop, rules=rules)
    released = ""
    for start in range(0, len(text), piece):
        released += stream.feed(text[start : start + piece])
        if stream.done:
            break
    released += stream.finish()
    assert released == expected


def test_streaming_stops_as_soon_as_the_block_ends() -> None:
    stream = StreamingPostprocessor(prefix="def f():\n", suffix="", stop=(), rules=BLOCK)
    assert stream.feed("    return 1\n") == "    return 1"
    assert not stream.done
    assert stream.feed("x") == ""
    assert stream.done
