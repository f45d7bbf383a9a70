"""Cutting the code around the cursor to the arm's token budget."""

from __future__ import annotations

import pytest

from serving.budget import cut_to_budget, fit_to_context, keep_head, keep_tail, split_budget


def chars(text: str) -> int:
    """One token per character: budgets are then easy to read."""
    return len(text)


def words(text: str) -> int:
    """One token per whitespace-separated word (a tokenizer that is not per character)."""
    return len(text.split())


def test_everything_fits() -> None:
    cut = cut_to_budget("abc", "de", budget=10, prefix_share=0.7, count=chars)
    assert (cut.prefix, cut.suffix, cut.prefix_tokens, cut.suffix_tokens) == ("abc", "de", 3, 2)


def test_70_30_split_keeps_the_end_of_the_prefix_and_the_start_of_the_suffix() -> None:
    cut = cut_to_budget(
        "p" * 50 + "END", "START" + "s" * 50, budget=20, prefix_share=0.7, count=chars
    )
    assert cut.prefix == "p" * 11 + "END" and cut.prefix_tokens == 14
    assert cut.suffix == "START" + "s" and cut.suffix_tokens == 6


@pytest.mark.parametrize(
    ("budget", "prefix", "suffix", "expected"),
    [
        (100, 200, 200, (70, 30)),
        (100, 10, 200, (10, 90)),
        (100, 200, 5, (95, 5)),
        (10, 3, 3, (3, 3)),
        (0, 5, 5, (0, 0)),
    ],
)
def test_unused_share_goes_to_the_other_side(
    budget: int, prefix: int, suffix: int, expected: tuple[int, int]
) -> None:
    assert split_budget(budget, prefix, suffix, 0.7) == expected


def test_short_suffix_gives_its_share_to_the_prefix() -> None:
    cut = cut_to_budget("x" * 100, "ab", budget=20, prefix_share=0.7, count=chars)
    assert cut.prefix == "x" * 18 and cut.suffix == "ab"


def test_cutting_respects_a_word_tokenizer() -> None:
    prefix = " ".join(f"w{i}" for i in range(100))
    suffix = " ".join(f"s{i}" for i in range(100))
    cut = cut_to_budget(prefix, suffix, budget=10, prefix_share=0.7, count=words)
    assert cut.prefix_tokens + cut.suffix_tokens <= 10
    assert cut.prefix.split() == [f"w{i}" for i in range(93, 100)]
    assert cut.suffix.split() == ["s0", "s1", "s2"]


def test_keep_tail_and_head_edges() -> None:
    assert keep_tail("abcdef", 0, chars) == ("", 0)
    assert keep_tail("abcdef", 2, chars) == ("ef", 2)
    assert keep_head("abcdef", 2, chars) == ("ab", 2)
    assert keep_head("", 5, chars) == ("", 0)


def test_invalid_split_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="prefix_share"):
        split_budget(10, 1, 1, 1.0)
    with pytest.raises(ValueError, match="budget"):
        split_budget(-1, 1, 1, 0.5)


def test_fit_to_context_leaves_room_for_template_and_completion() -> None:
    # 256-token context, 4 template tokens, 64 completion tokens: 188 left for the code.
    assert fit_to_context(2048, context_length=256, template_tokens=4, max_tokens=64) == 188
    # The arm's own budget wins when it is the smaller one, and no limit means no cut.
    assert fit_to_context(100, context_length=256, template_tokens=4, max_tokens=64) == 100
    assert fit_to_context(2048, context_length=None, template_tokens=4, max_tokens=64) == 2048
    # A completion that fills the context leaves no code rather than a negative budget.
    assert fit_to_context(2048, context_length=64, template_tokens=4, max_tokens=64) == 0
