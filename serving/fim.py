"""Fill-in-the-middle prompt templates per model family (tabled in docs/architecture.md).

The strings are exact: a missing space in CodeLlama's template or an ASCII bar in DeepSeek's
markers silently degrades every completion, so tests compare them character for character.
"""

from __future__ import annotations

import dataclasses
import re

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


@dataclasses.dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """A prompt a client already rendered with some family's template, split back apart."""

    family: FimFamily
    prefix: str
    suffix: str
    # Text before the template's first marker (repository or file metadata some clients put
    # there, such as StarCoder's ``<file_sep>path``): kept in front of the prefix.
    preamble: str = ""


def _markers(template: FimTemplate) -> list[str]:
    """The literal pieces of a template around ``{prefix}`` and ``{suffix}``, in order."""
    return re.split(r"\{prefix\}|\{suffix\}", template.template)


# Families whose markers are unmistakable in source code (InCoder's are generic masks, and
# Codestral's ``[PREFIX]`` could be an array index): only these are split back.
_DETECTABLE = (
    FimFamily.STARCODER,
    FimFamily.QWEN25_CODER,
    FimFamily.DEEPSEEK_CODER,
    FimFamily.CODELLAMA,
    FimFamily.CODEGEMMA,
)


def split_rendered(prompt: str) -> RenderedPrompt | None:
    """The prefix and suffix of a prompt already carrying a fill-in-the-middle template.

    IDE clients such as Continue and llm-ls render the template themselves and send the result
    as a plain ``prompt``; templating it again would nest two templates and the model would
    answer junk. Recognised when the prompt holds the family's markers in order, the last one
    ending the prompt (the model continues from there).
    """
    for family in _DETECTABLE:
        template = TEMPLATES[family]
        head, *middle, tail = _markers(template)
        if tail and not prompt.endswith(tail.rstrip(" ")):
            continue
        first = head.strip(" ") if head else middle[0].strip(" ")
        start = prompt.find(first)
        if not first or start < 0:
            continue
        layout = template.template
        suffix_first = layout.find("{suffix}") < layout.find("{prefix}")
        body = prompt[start + len(head.rstrip(" ")) :] if head else prompt[start:]
        end = len(body) - len(tail.rstrip(" ")) if tail else len(body)
        body = body[:end]
        separator = middle[0] if middle else ""
        marker = separator.strip(" ")
        if not marker or marker not in body:
            continue
        one, _, two = body.partition(marker)
        # Templates put a space around some markers (CodeLlama's "<PRE> {prefix} <SUF>"): the
        # client's rendering has them too, so they are not code.
        one = one.removeprefix(" ") if head.endswith(" ") else one
        one = one.removesuffix(" ") if separator.startswith(" ") else one
        two = two.removeprefix(" ") if separator.endswith(" ") else two
        two = two.removesuffix(" ") if tail.startswith(" ") else two
        prefix, suffix = (two, one) if suffix_first else (one, two)
        return RenderedPrompt(family, prefix, suffix, preamble=prompt[:start])
    return None
