"""Fill-in-the-middle prompt templates per model family (tabled in docs/architecture.md).

The strings are exact: a missing space in CodeLlama's template or an ASCII bar in DeepSeek's
markers silently degrades every completion, so tests compare them character for character.
"""

from __future__ import annotations

import dataclasses

from experiments.variants import FimFamily


@dataclasses.dataclass(frozen=True, slots=True)
class FimTemplate:
    """How one model family spells a fill-in-the-middle prompt, and where it stops."""

    family: FimFamily
    # ``{prefix}`` and ``{suffix}`` are filled by plain replacement, never str.format: code is
    # full of braces.
    template: str
    stop: tuple[str, ...]

    def render(self, prefix: str, suffix: str) -> str:
        """The prompt for code ``prefix`` before the cursor and ``suffix`` after it."""
        head, _, rest = self.template.partition("{prefix}")
        if "{suffix}" in head:  # suffix-first (SPM) layouts
            before, _, between = head.partition("{suffix}")
            return before + suffix + between + prefix + rest
        middle, _, tail = rest.partition("{suffix}")
        return head + prefix + middle + suffix + tail


_DEEPSEEK_BEGIN = "<\uff5cfim\u2581begin\uff5c>"
_DEEPSEEK_HOLE = "<\uff5cfim\u2581hole\uff5c>"
_DEEPSEEK_END = "<\uff5cfim\u2581end\uff5c>"
_DEEPSEEK_EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"

TEMPLATES: dict[FimFamily, FimTemplate] = {
    t.family: t
    for t in (
        FimTemplate(
            FimFamily.STARCODER,
            "<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>",
            ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>", "<|endoftext|>"),
        ),
        FimTemplate(
            FimFamily.QWEN25_CODER,
            "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",
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
        FimTemplate(
            FimFamily.DEEPSEEK_CODER,
            _DEEPSEEK_BEGIN + "{prefix}" + _DEEPSEEK_HOLE + "{suffix}" + _DEEPSEEK_END,
            (_DEEPSEEK_BEGIN, _DEEPSEEK_HOLE, _DEEPSEEK_END, _DEEPSEEK_EOS),
        ),
        FimTemplate(
            FimFamily.CODELLAMA,
            "<PRE> {prefix} <SUF>{suffix} <MID>",
            ("<PRE>", "<SUF>", "<MID>", "<EOT>"),
        ),
        FimTemplate(
            FimFamily.CODEGEMMA,
            "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",
            (
                "<|fim_prefix|>",
                "<|fim_suffix|>",
                "<|fim_middle|>",
                "<|file_separator|>",
                "<eos>",
            ),
        ),
        FimTemplate(
            FimFamily.CODESTRAL,
            "[SUFFIX]{suffix}[PREFIX]{prefix}",
            ("[PREFIX]", "[SUFFIX]"),
        ),
        FimTemplate(
            FimFamily.INCODER,
            "{prefix}<|mask:0|>{suffix}<|mask:1|><|mask:0|>",
            ("<|endofmask|>",),
        ),
    )
}


def template_for(family: FimFamily) -> FimTemplate:
    """The template of ``family``."""
    return TEMPLATES[family]


def render(family: FimFamily, prefix: str, suffix: str) -> str:
    """The fill-in-the-middle prompt of ``family`` for ``prefix`` and ``suffix``."""
    return TEMPLATES[family].render(prefix, suffix)


def stop_strings(family: FimFamily, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The family's stop strings followed by ``extra`` ones, without duplicates."""
    return tuple(dict.fromkeys((*TEMPLATES[family].stop, *extra)))
