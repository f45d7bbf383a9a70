"""The starting codebook's descriptions and phrases follow the labelling rules.

The seeded descriptions were one line each and left the borders open: "other" was "anything
that fits no other theme" while the rules give it overall verdicts, comparisons between tools,
price and over-reliance; speed and latency, or disruptive and wrong suggestions, were not told
apart. Each seeded theme whose description and phrases nobody has edited since is rewritten,
and the edit is recorded in the codebook's history like any other (the codebook's version
moves, so the tagger retrains and re-tags model tags). Themes people have edited stay theirs.

Revision ID: b81f5d3e9a47
Revises: a4c9e1d27b35
Create Date: 2026-12-02 14:10:00.000000+00:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b81f5d3e9a47"
down_revision: str | Sequence[str] | None = "a4c9e1d27b35"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTOR = "migration:b81f5d3e9a47"

# id -> (description, example phrases); written for the project from the labelling rules.
REVISED: dict[str, tuple[str, list[str]]] = {
    "api_discovery": (
        "A suggestion surfaces a library call, API, syntax or idiom the developer did not know "
        "or would have had to look up.",
        [
            "it showed me a library function I did not know existed",
            "I no longer open the reference docs to find the right method",
            "learned a new standard library idiom from a suggestion",
            "points me to the right class in a framework I am new to",
            "found the SDK call I would have searched for",
        ],
    ),
    "boilerplate": (
        "Repetitive, low-entropy code: CRUD, DTOs, mappers, route handlers, scaffolding, "
        "getters; praise or worry about piling it up.",
        [
            "great for the repetitive boilerplate code",
            "it fills in the CRUD handlers and DTO mappings",
            "writes the tedious scaffolding, getters and setters",
            "saves typing the same setup code again and again",
            "it makes it far too easy to pile up copy-pasted boilerplate",
        ],
    ),
    "speed": (
        "Completion speeds coding up (or slows it down) overall: time saved, productivity, "
        "not wanting to go back. Not how long one suggestion takes to appear.",
        [
            "I code much faster with it",
            "saves me an hour a day",
            "I would not want to go back to coding without it",
            "reviewing its output slows me down more than it helps",
            "big productivity boost on routine work",
        ],
    ),
    "documentation": (
        "Completion while writing comments, docstrings, READMEs or prose: useful help, or "
        "unwanted and invented comment text.",
        [
            "writes good docstrings for my functions",
            "it finishes my comments with things that are not true",
            "please stop suggesting text inside comments",
            "helps write the README and usage notes",
            "autocompleting markdown prose is distracting",
        ],
    ),
    "accurate_suggestions": (
        "A suggestion or the assistant is right, relevant, picks up the pattern or the intent; "
        "how often suggestions are useful.",
        [
            "the suggestions are spot on",
            "it understood exactly what I was about to write",
            "it picks up the pattern from the surrounding code",
            "about half of the suggestions are usable as they are",
            "completions fit the context of my project",
        ],
    ),
    "wrong_suggestions": (
        "Incorrect, invented, irrelevant, wrong-language, broken or badly formatted suggestions "
        "(stray brackets, indentation), deprecated code, a general decline in quality.",
        [
            "it suggested a method that does not exist",
            "completions add an extra closing bracket",
            "the indentation of multi-line suggestions is off",
            "it suggests Python syntax in a TypeScript file",
            "the quality of suggestions has got worse lately",
        ],
    ),
    "disruptive": (
        "Suggestions interrupt typing or flow: too eager or frequent, text that jumps or shifts, "
        "accidental accepts with Tab, visual clutter, pop-ups.",
        [
            "the ghost text keeps interrupting my train of thought",
            "I accidentally accept suggestions when I press Tab to indent",
            "the code jumps around while the suggestion renders",
            "suggestions pop up on every keystroke",
            "it never gets in my way",
        ],
    ),
    "latency": (
        "How long a suggestion takes to appear, and input lag caused by the completion engine; "
        "slow and fast alike.",
        [
            "suggestions take several seconds to appear",
            "typing lags while it computes a completion",
            "completions time out",
            "by the time the suggestion shows up I have typed it already",
            "suggestions appear instantly, no lag",
        ],
    ),
    "suggestion_length": (
        "The length of suggestions: a block when a line was wanted, one line only, trivial "
        "completions of a few characters, or how much of a suggestion Tab accepts.",
        [
            "it suggests whole functions when I want one line",
            "completions get cut off after a single line",
            "suggestions of two characters are not worth it",
            "I want to accept only the next word, not the whole block",
            "I love the multi-line completions",
        ],
    ),
    "test_generation": (
        "Completing or generating tests, assertions or test scaffolding, useful or tautological.",
        [
            "it writes my unit tests for me",
            "generated test cases caught an edge case",
            "helps with assertions, mocks and fixtures",
            "the tests it writes only assert what the code already does",
            "it fills in the test table for every case",
        ],
    ),
    "trust_privacy": (
        "Where code goes (confidentiality, code sent to a cloud, leaked data) and where "
        "suggestions come from (licence, verbatim copying, insecure or malicious snippets).",
        [
            "is my code sent to a server?",
            "worried it copies licensed code verbatim",
            "our company will not allow code to leave the network",
            "it suggested a hard-coded secret from somewhere",
            "it proposed an insecure SQL query",
        ],
    ),
    "feature_request": (
        "An explicit ask for a setting or capability: a delay or debounce, manual trigger, "
        "single-line mode, per-file or per-context disable, keybinding, editor support.",
        [
            "please add a setting for the delay before suggestions",
            "I wish I could trigger completions only with a shortcut",
            "can you add a way to disable it for markdown files",
            "would love support for another editor",
            "add an option for single-line suggestions only",
        ],
    ),
    "other": (
        "Overall verdicts and comparisons between tools, price, quota or value, over-reliance "
        "or skill atrophy, verbosity of the resulting codebase; anything no other theme covers.",
        [
            "overall it is worth it",
            "I switched to another assistant and it is better",
            "too expensive for what it does",
            "I worry I am forgetting how to write code myself",
            "nothing to add",
        ],
    ),
}

_SNAPSHOT = (
    "id",
    "name",
    "description",
    "examples",
    "polarity_leaning",
    "active",
    "merged_into",
)


def _untouched(bind: sa.Connection, theme_id: str) -> dict[str, object] | None:
    """The theme's row when its only history is the seeding ``add``; None otherwise."""
    edits = bind.execute(
        sa.text("SELECT count(*) FROM feedback_theme_history WHERE theme_id = :id"),
        {"id": theme_id},
    ).scalar_one()
    if edits != 1:
        return None
    row = bind.execute(
        sa.text(f"SELECT {', '.join(_SNAPSHOT)} FROM feedback_themes WHERE id = :id"),
        {"id": theme_id},
    ).one_or_none()
    return None if row is None else dict(row._mapping)


def upgrade() -> None:
    bind = op.get_bind()
    for theme_id, (description, examples) in REVISED.items():
        before = _untouched(bind, theme_id)
        if before is None or not before["active"]:
            continue
        after = {**before, "description": description, "examples": examples}
        bind.execute(
            sa.text(
                "UPDATE feedback_themes SET description = :description, "
                "examples = CAST(:examples AS jsonb), updated_at = now() WHERE id = :id"
            ),
            {"id": theme_id, "description": description, "examples": json.dumps(examples)},
        )
        bind.execute(
            sa.text(
                "INSERT INTO feedback_theme_history (theme_id, action, before, after, actor) "
                "VALUES (:id, 'edit', CAST(:before AS jsonb), CAST(:after AS jsonb), :actor)"
            ),
            {
                "id": theme_id,
                "before": json.dumps(before),
                "after": json.dumps(after),
                "actor": ACTOR,
            },
        )


def downgrade() -> None:
    # Put back each theme this migration edited (and nobody edited since) as it was before.
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT h.id, h.theme_id, h.before FROM feedback_theme_history h "
            "WHERE h.actor = :actor AND NOT EXISTS (SELECT 1 FROM feedback_theme_history later "
            "WHERE later.theme_id = h.theme_id AND later.id > h.id)"
        ),
        {"actor": ACTOR},
    ).all()
    for history_id, theme_id, before in rows:
        bind.execute(
            sa.text(
                "UPDATE feedback_themes SET description = :description, "
                "examples = CAST(:examples AS jsonb), updated_at = now() WHERE id = :id"
            ),
            {
                "id": theme_id,
                "description": before["description"],
                "examples": json.dumps(before["examples"]),
            },
        )
        bind.execute(
            sa.text("DELETE FROM feedback_theme_history WHERE id = :id"), {"id": history_id}
        )
