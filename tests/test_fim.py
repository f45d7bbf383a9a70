"""FIM templates against each model family's exact strings (tabled in docs/architecture.md)."""

from __future__ import annotations

import pytest

from experiments.variants import FimFamily
from serving import fim

PREFIX = "def add(a, b):\n    return "
SUFFIX = "\n\nprint(add(1, 2))\n"


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        (
            FimFamily.STARCODER,
            "<fim_prefix>" + PREFIX + "<fim_suffix>" + SUFFIX + "<fim_middle>",
        ),
        (
            FimFamily.QWEN25_CODER,
            "<|fim_prefix|>" + PREFIX + "<|fim_suffix|>" + SUFFIX + "<|fim_middle|>",
        ),
        (
            FimFamily.DEEPSEEK_CODER,
            "<\uff5cfim\u2581begin\uff5c>"
            + PREFIX
            + "<\uff5cfim\u2581hole\uff5c>"
            + SUFFIX
            + "<\uff5cfim\u2581end\uff5c>",
        ),
        (FimFamily.CODELLAMA, "<PRE> " + PREFIX + " <SUF>" + SUFFIX + " <MID>"),
        (
            FimFamily.CODEGEMMA,
            "<|fim_prefix|>" + PREFIX + "<|fim_suffix|>" + SUFFIX + "<|fim_middle|>",
        ),
        (FimFamily.CODESTRAL, "[SUFFIX]" + SUFFIX + "[PREFIX]" + PREFIX),
        (FimFamily.INCODER, PREFIX + "<|mask:0|>" + SUFFIX + "<|mask:1|><|mask:0|>"),
    ],
)
def test_render_matches_the_design_exactly(family: FimFamily, expected: str) -> None:
    assert fim.render(family, PREFIX, SUFFIX) == expected


def test_deepseek_markers_use_full_width_bars_and_lower_one_eighth_blocks() -> None:
    prompt = fim.render(FimFamily.DEEPSEEK_CODER, "a", "b")
    assert prompt == "<｜fim▁begin｜>a<｜fim▁hole｜>b<｜fim▁end｜>"
    assert "|" not in prompt and "_" not in prompt


@pytest.mark.parametrize(
    ("family", "stops"),
    [
        (
            FimFamily.STARCODER,
            ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>", "<|endoftext|>"),
        ),
        (
            FimFamily.QWEN25_CODER,
            (
                "<|endoftext|>",
                "<|fim_prefix|>",
                "<|fim_middle|>",
                "<|fim_suffix|>",
                "<|fim_pad|>",
                "<|repo_name|>",
                "<|file_sep|>",
            ),
        ),
        (
            FimFamily.DEEPSEEK_CODER,
            ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<｜end▁of▁sentence｜>"),
        ),
        (FimFamily.CODELLAMA, ("<PRE>", "<SUF>", "<MID>", "<EOT>")),
        (
            FimFamily.CODEGEMMA,
            ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_separator|>", "<eos>"),
        ),
        (FimFamily.CODESTRAL, ("[PREFIX]", "[SUFFIX]")),
        (FimFamily.INCODER, ("<|endofmask|>",)),
    ],
)
def test_stop_strings_per_family(family: FimFamily, stops: tuple[str, ...]) -> None:
    assert fim.template_for(family).stop == stops


def test_every_family_has_a_template() -> None:
    assert set(fim.TEMPLATES) == set(FimFamily)


@pytest.mark.parametrize("family", list(FimFamily))
def test_braces_and_format_fields_in_code_are_left_alone(family: FimFamily) -> None:
    prefix, suffix = 'f"{prefix}" + {x}', "{suffix} }"
    prompt = fim.render(family, prefix, suffix)
    assert prefix in prompt and suffix in prompt
    assert prompt.replace(prefix, "P").replace(suffix, "S") == fim.render(family, "P", "S")


def test_extra_stop_strings_follow_the_family_without_duplicates() -> None:
    assert fim.stop_strings(FimFamily.CODESTRAL, ("\n\n", "[PREFIX]")) == (
        "[PREFIX]",
        "[SUFFIX]",
        "\n\n",
    )
