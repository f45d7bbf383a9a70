"""Feedback comments in developers' words: composed per theme and polarity, never a fixed list.

Each comment is an opener, a core statement of its theme (with slots for the language and a
concrete thing from that theme), and a closer, each drawn at random, so the same theme reads
differently every time, as real feedback does. Themes are the starting codebook (migration
f3ed6ac0b8a1; listed in docs/architecture.md, Feedback tagging).
"""

from __future__ import annotations

import numpy as np

LANGUAGE_NAMES = {
    "python": "Python",
    "typescript": "TypeScript",
    "javascript": "JavaScript",
    "java": "Java",
    "go": "Go",
    "rust": "Rust",
    "cpp": "C++",
    "kotlin": "Kotlin",
    "ruby": "Ruby",
    "csharp": "C#",
}

# theme -> (words for {thing}, positive cores, negative cores)
THEMES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "api_discovery": (
        ("library calls", "API methods", "stdlib helpers", "SDK functions", "config options"),
        (
            "it showed me {thing} I did not know existed",
            "I find the right {thing} without leaving the editor",
            "learned a few {thing} in {lang} just from the suggestions",
        ),
        (
            "it keeps suggesting {thing} that were removed years ago",
            "the {thing} it proposes for {lang} are not in our versions",
        ),
    ),
    "boilerplate": (
        ("getters and setters", "argument parsing", "dataclass fields", "error handling", "DTOs"),
        (
            "it writes the {thing} for me",
            "no more typing out {thing} by hand in {lang}",
            "the {thing} it fills in are exactly what I would write",
        ),
        ("it fills in {thing} I did not want", "the {thing} it writes do not follow our style"),
    ),
    "speed": (
        ("small functions", "loops", "refactors", "one-liners", "test fixtures"),
        (
            "I get through {thing} much faster",
            "it speeds up {thing} a lot in {lang}",
            "the {thing} practically write themselves now",
        ),
        ("it slows me down on {thing}, I keep reviewing what it wrote",),
    ),
    "documentation": (
        ("docstrings", "comments", "README snippets", "type hints"),
        ("the {thing} it writes are clear", "good at {thing} for {lang} code"),
        ("the {thing} it writes are generic and useless", "it invents {thing} that are wrong"),
    ),
    "accurate_suggestions": (
        ("completions", "suggestions", "multi-line blocks", "function bodies"),
        (
            "the {thing} are right most of the time",
            "{thing} in {lang} have become really accurate",
            "it understands the surrounding code, the {thing} fit",
        ),
        ("the {thing} are less accurate than they used to be",),
    ),
    "wrong_suggestions": (
        ("variable names", "function calls", "imports", "types", "APIs"),
        ("it rarely makes up {thing} any more",),
        (
            "it hallucinates {thing} that do not exist",
            "half the {thing} it suggests in {lang} are wrong",
            "it confidently completes {thing} that do not compile",
        ),
    ),
    "disruptive": (
        ("popups", "ghost text", "suggestions", "inline hints"),
        ("the {thing} stay out of my way",),
        (
            "the {thing} break my flow",
            "too many {thing} while I am thinking",
            "the {thing} jump around while I type {lang}",
        ),
    ),
    "latency": (
        ("suggestions", "completions", "multi-line suggestions"),
        ("the {thing} appear instantly", "fast {thing}, no waiting"),
        (
            "the {thing} come too late, I have already typed it",
            "{thing} are slow today",
            "waiting for {thing} in big {lang} files is painful",
        ),
    ),
    "suggestion_length": (
        ("multi-line suggestions", "whole functions", "long completions", "single lines"),
        ("the {thing} are just the right size", "love the {thing}"),
        ("the {thing} are too long to review", "I only want {thing}, not essays"),
    ),
    "test_generation": (
        ("unit tests", "test cases", "assertions", "mocks"),
        ("it writes {thing} for my {lang} code in seconds", "great for {thing}"),
        ("the {thing} it writes test nothing useful",),
    ),
    "trust_privacy": (
        ("code", "snippets", "licensed code", "secrets"),
        ("glad our {thing} stay on our servers",),
        (
            "not sure where my {thing} end up",
            "worried it reproduces {thing} from somewhere",
            "it once completed {thing} from another repo",
        ),
    ),
    "feature_request": (
        ("a keyboard shortcut", "partial accept by word", "a chat panel", "per-project settings"),
        ("would love {thing} on top of this",),
        ("please add {thing}", "missing {thing}, otherwise fine"),
    ),
}

POSITIVE_THEMES = {
    "api_discovery": 3.0,
    "boilerplate": 3.0,
    "speed": 2.5,
    "accurate_suggestions": 2.0,
    "documentation": 1.0,
    "test_generation": 1.0,
    "suggestion_length": 0.7,
    "feature_request": 0.5,
    "trust_privacy": 0.2,
}
NEGATIVE_THEMES = {
    "wrong_suggestions": 3.0,
    "disruptive": 2.0,
    "latency": 1.5,
    "suggestion_length": 1.2,
    "trust_privacy": 0.8,
    "feature_request": 1.0,
    "documentation": 0.4,
    "api_discovery": 0.6,
}

OPENERS = {
    True: ("", "", "Honestly, ", "Love it: ", "Nice - ", "Been using it all week and ", "Wow, "),
    False: ("", "", "Hmm, ", "Annoying: ", "Meh. ", "Not great - ", "Frankly, "),
}
CLOSERS = {
    True: ("", "", ".", "!", ". Huge time saver.", ". Keep it up.", ", thanks!", " :)"),
    False: ("", "", ".", "!", ". Please fix.", ". Turning it off for now.", " :(", "..."),
}


def pick_theme(rng: np.random.Generator, *, positive: bool) -> str:
    """A theme, drawn with the weights of the polarity."""
    weights = POSITIVE_THEMES if positive else NEGATIVE_THEMES
    names = list(weights)
    p = np.array([weights[name] for name in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def compose(rng: np.random.Generator, *, theme: str, positive: bool, language: str) -> str:
    """One comment on ``theme`` with the given polarity, mentioning ``language`` at times."""
    things, good, bad = THEMES[theme]
    cores = good if positive else bad
    core = cores[int(rng.integers(len(cores)))].format(
        thing=things[int(rng.integers(len(things)))],
        lang=LANGUAGE_NAMES.get(language, language),
    )
    opener = OPENERS[positive][int(rng.integers(len(OPENERS[positive])))]
    closer = CLOSERS[positive][int(rng.integers(len(CLOSERS[positive])))]
    text = f"{opener}{core}{closer}"
    return text[0].upper() + text[1:]
