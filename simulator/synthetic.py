"""Synthetic experiment data with a known effect, bulk-loaded by the event store's COPY writer.

Users (each with one language, a fifth of them with a second) are split at random between two
arms; their suggestions are spread uniformly over ``days`` days ending ``end``. The experiment
starts ``pre_days`` in: a user's exposure is their first suggestion served after the start. After
exposure, the treatment arm's acceptance probability is multiplied by ``1 + acceptance_effect``;
nothing else differs between arms. Each suggestion gives a completion_served, most a
suggestion_shown and a suggestion_outcome, accepted ones persistence checks at 30/120/300/600 s,
and one in eight a typing_volume window: about 3.9 events per suggestion.

Optional, for the dashboard's seed (the defaults leave the generated rows unchanged): users
spread over several IDEs (``ides``, a function of the user number, so no random draw moves),
numbers starting at ``id_offset`` (several experiments in one database without clashing user or
suggestion ids), and thumbs feedback with a comment on a share of suggestions
(``feedback_share``), more often positive in the treatment arm after exposure.

Rows are generated with numpy and written as PostgreSQL's binary COPY format directly from
structured arrays (no per-row Python), so loading runs at the server's COPY speed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from collector.bulk import Column, const_bytes, copy_columns, hex_ids, pg_time, random_uuids
from experiments.assignment.exposures import exposure_id

LANGUAGES = ("python", "typescript", "java", "go", "rust", "cpp", "kotlin", "ruby")
ARMS = ("control", "treatment")
EVENTS_PER_SUGGESTION = 3.9


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """What to generate."""

    experiment: str = "synthetic"
    users: int = 1000
    events: int = 40_000
    languages: tuple[str, ...] = LANGUAGES
    days: float = 6.0
    pre_days: float = 3.0
    acceptance_effect: float = 0.10
    # Share of users who also write a second language.
    second_language_share: float = 0.2
    seed: int = 1
    end: dt.datetime | None = None  # default: two hours ago
    chunk_users: int = 20_000
    ides: tuple[str, ...] = ("vscode",)
    # User numbers (and suggestion numbers, times 2**24) start here.
    id_offset: int = 0
    # Share of suggestions that get a thumbs rating with a comment.
    feedback_share: float = 0.0


@dataclasses.dataclass(frozen=True)
class SyntheticLoad:
    """What was loaded: rows per table and the time range."""

    rows: dict[str, int]
    start: dt.datetime
    end: dt.datetime

    @property
    def events(self) -> int:
        """Rows in the five high-volume event tables."""
        return sum(n for table, n in self.rows.items() if table != "exposure")


# --- the generator --------------------------------------------------------------------------------


def load_synthetic(conn: psycopg.Connection[Any], config: SyntheticConfig) -> SyntheticLoad:
    """Generate ``config``'s data and COPY it into the tables (partitions must exist)."""
    end = config.end or dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    start = end - dt.timedelta(days=config.days)
    rng = np.random.default_rng(config.seed)
    suggestions_per_user = config.events / EVENTS_PER_SUGGESTION / config.users
    rows: dict[str, int] = {}
    counter = config.id_offset << 24
    for first in range(0, config.users, config.chunk_users):
        users = config.id_offset + np.arange(
            first, min(config.users, first + config.chunk_users), dtype=np.int64
        )
        written = _load_chunk(conn, config, rng, users, start, end, suggestions_per_user, counter)
        counter += written.pop("_suggestions")
        for table, n in written.items():
            rows[table] = rows.get(table, 0) + n
    return SyntheticLoad(rows=rows, start=start, end=end)


def _load_chunk(
    conn: psycopg.Connection[Any],
    config: SyntheticConfig,
    rng: np.random.Generator,
    users: npt.NDArray[np.int64],
    start: dt.datetime,
    end: dt.datetime,
    per_user: float,
    counter: int,
) -> dict[str, int]:
    n_users = len(users)
    n_lang = len(config.languages)
    languages = np.array([lang.encode() for lang in config.languages])
    user_ids = hex_ids(b"u", users, width=8)
    sessions = hex_ids(b"s", users, width=8)
    ides = np.array([ide.encode() for ide in config.ides])
    user_ide = _spread(users, len(config.ides))
    arm = rng.integers(0, 2, n_users)
    lang1 = rng.integers(0, n_lang, n_users)
    lang2 = np.where(
        rng.random(n_users) < config.second_language_share, rng.integers(0, n_lang, n_users), lang1
    )
    activity = rng.gamma(2.0, 0.5, n_users)
    p_accept = rng.beta(3.0, 7.0, n_users)

    counts = rng.poisson(activity * per_user)
    who = np.repeat(np.arange(n_users), counts)
    n = len(who)
    span = (end - start).total_seconds()
    ts = start.timestamp() + rng.random(n) * span
    order = np.lexsort((ts, who))
    who, ts = who[order], ts[order]
    lang = np.where(rng.random(n) < 0.3, lang2[who], lang1[who])

    # Exposure: the first suggestion served after the experiment starts.
    begin = start.timestamp() + config.pre_days * 86_400
    exposed_at = np.full(n_users, np.inf)
    after = ts >= begin
    np.minimum.at(exposed_at, who[after], ts[after])
    post = ts >= exposed_at[who]

    # completion_served
    latency = rng.lognormal(np.log(180.0), 0.5, n)
    error = rng.random(n) < 0.01
    suggestion = hex_ids(b"sg", counter + np.arange(n, dtype=np.int64))
    request = hex_ids(b"rq", counter + np.arange(n, dtype=np.int64))
    chars = 1 + rng.poisson(60, n)
    written = {"_suggestions": n}

    def common(index: npt.NDArray[np.int64], when: npt.NDArray[np.float64]) -> dict[str, Column]:
        k = len(index)
        return {
            "event_id": ("uuid", random_uuids(rng, k)),
            "client_ts": ("timestamptz", pg_time(when)),
            "received_at": ("timestamptz", pg_time(when + 1.0)),
            "schema_version": ("int2", np.ones(k, dtype=np.int16)),
            "user_id": ("text", user_ids[who[index]]),
            "session_id": ("text", sessions[who[index]]),
            "ide": ("text", ides[user_ide[who[index]]]),
            "plugin_version": ("text", const_bytes(b"1.4.2", k)),
            "language": ("text", languages[lang[index]]),
        }

    everyone = np.arange(n)
    arms_json = np.array([json.dumps({config.experiment: name}).encode() for name in ARMS])
    served = common(everyone, ts) | {
        "suggestion_id": ("text", suggestion),
        "request_id": ("text", request),
        "arms": ("jsonb", arms_json[arm[who]]),
        "model": ("text", const_bytes(b"codelift-fim-small", n)),
        "latency_ms": ("float8", latency),
        "prompt_tokens": ("int4", rng.integers(200, 2048, n).astype(np.int32)),
        "completion_chars": ("int4", chars.astype(np.int32)),
        "completion_lines": ("int4", (1 + chars // 40).astype(np.int32)),
        "finish_reason": ("text", const_bytes(b"stop", n)),
        "error": ("text", const_bytes(b"timeout", n)),
    }
    written["completion_served"] = copy_columns(
        conn, "completion_served", served, {"error": ~error}
    )

    # suggestion_shown
    shown = np.flatnonzero(~error & (rng.random(n) < 0.9))
    shown_ts = ts[shown] + latency[shown] / 1000
    display = rng.exponential(1500.0, len(shown))
    lines = 1 + chars[shown] // 40
    written["suggestion_shown"] = copy_columns(
        conn,
        "suggestion_shown",
        common(shown, shown_ts)
        | {
            "suggestion_id": ("text", suggestion[shown]),
            "display_ms": ("float8", display),
            "chars": ("int4", chars[shown].astype(np.int32)),
            "lines": ("int4", lines.astype(np.int32)),
            "multiline": ("bool", (lines > 1).astype(np.uint8)),
            "trigger": ("text", const_bytes(b"auto", len(shown))),
        },
    )

    # suggestion_outcome: the known effect is on the acceptance probability.
    lift = np.where((arm[who[shown]] == 1) & post[shown], 1 + config.acceptance_effect, 1.0)
    accepted = rng.random(len(shown)) < np.minimum(1.0, p_accept[who[shown]] * lift)
    partial = accepted & (rng.random(len(shown)) < 0.2)
    outcomes = np.array([b"accepted", b"partially_accepted", b"dismissed", b"ignored"])
    kind = np.where(partial, 1, np.where(accepted, 0, 2 + (rng.random(len(shown)) < 0.5)))
    accepted_chars = np.where(
        accepted,
        np.maximum(1, (chars[shown] * np.where(partial, rng.uniform(0.3, 0.9), 1.0))),
        0,
    ).astype(np.int32)
    outcome_ts = shown_ts + display / 1000
    written["suggestion_outcome"] = copy_columns(
        conn,
        "suggestion_outcome",
        common(shown, outcome_ts)
        | {
            "suggestion_id": ("text", suggestion[shown]),
            "outcome": ("text", outcomes[kind]),
            "accepted_chars": ("int4", accepted_chars),
            "accepted_lines": ("int4", np.where(accepted, lines, 0).astype(np.int32)),
        },
    )

    # persistence_check at each checkpoint, for accepted suggestions still being edited.
    acc = np.flatnonzero(accepted)
    checks = []
    for step, (checkpoint, keep) in enumerate(((30, 0.9), (120, 0.85), (300, 0.8), (600, 0.75))):
        reached = acc[rng.random(len(acc)) < 0.97 ** (step + 1)]
        present = rng.random(len(reached)) < keep
        ratio = np.where(present, rng.beta(1.0, 6.0, len(reached)), 1.0)
        remaining = np.where(present, accepted_chars[reached] * (1 - ratio), 0).astype(np.int32)
        checks.append((reached, checkpoint, present, ratio, remaining))
    at = np.concatenate([c[0] for c in checks])
    check_ts = outcome_ts[at] + np.concatenate([np.full(len(c[0]), c[1]) for c in checks])
    statuses = np.array([b"removed", b"present"])
    written["persistence_check"] = copy_columns(
        conn,
        "persistence_check",
        common(shown[at], check_ts)
        | {
            "suggestion_id": ("text", suggestion[shown[at]]),
            "checkpoint_s": (
                "int2",
                np.concatenate([np.full(len(c[0]), c[1], dtype=np.int16) for c in checks]),
            ),
            "status": ("text", statuses[np.concatenate([c[2] for c in checks]).astype(int)]),
            "edit_distance_ratio": ("float8", np.concatenate([c[3] for c in checks])),
            "chars_remaining": ("int4", np.concatenate([c[4] for c in checks])),
        },
    )

    # typing_volume: one window in eight suggestions.
    typing = np.flatnonzero(rng.random(n) < 0.125)
    typed = rng.poisson(400, len(typing)).astype(np.int32)
    ai = rng.poisson(200 * p_accept[who[typing]]).astype(np.int32)
    zero = np.zeros(len(typing), dtype=np.int32)
    written["typing_volume"] = copy_columns(
        conn,
        "typing_volume",
        common(typing, ts[typing])
        | {
            "window_start": ("timestamptz", pg_time(ts[typing] - 300)),
            "window_end": ("timestamptz", pg_time(ts[typing])),
            "chars_typed_manual": ("int4", typed),
            "chars_accepted_ai": ("int4", ai),
            "chars_deleted": ("int4", zero),
            "chars_excluded_paste": ("int4", zero),
            "chars_excluded_bulk": ("int4", zero),
            "chars_excluded_undo_redo": ("int4", zero),
        },
    )

    # exposure: one row per exposed user, with the gateway's deterministic event id.
    hits = np.flatnonzero(after)
    exposed, first_hit = np.unique(who[hits], return_index=True)
    exposing = hits[first_hit]
    ids = np.array(
        [exposure_id(config.experiment, uid.decode()).bytes for uid in user_ids[exposed]],
        dtype="S16",
    )
    exposure = common(exposing, ts[exposing]) | {
        "event_id": ("uuid", ids),
        "experiment": ("text", const_bytes(config.experiment.encode(), len(exposed))),
        "arm": ("text", np.array([a.encode() for a in ARMS])[arm[exposed]]),
    }
    written["exposure"] = copy_columns(conn, "exposure", exposure)
    if config.feedback_share > 0:
        treated = (arm[who] == 1) & post
        written["feedback"] = _load_feedback(
            conn, rng, config.feedback_share, treated, ts, suggestion, common
        )
    return written


def _spread(users: npt.NDArray[np.int64], k: int) -> npt.NDArray[np.int64]:
    """Each user's index among ``k`` values, skewed to the first (shares ~ 1/2, 1/4, ...)."""
    # A fixed hash of the user number: the same user gets the same value in every chunk.
    unit = (users * 0.6180339887498949) % 1.0
    weights = 0.5 ** np.arange(1, k + 1)
    edges = np.cumsum(weights / weights.sum())[:-1]
    return np.searchsorted(edges, unit, side="right").astype(np.int64)


# (theme, positive comment, negative comment): what developers say about completions.
FEEDBACK_COMMENTS = (
    ("latency", "suggestions show up instantly", "completions are too slow, I type faster"),
    ("relevance", "it understands what I am writing", "suggestions ignore the code around them"),
    ("correctness", "the code compiles first time", "it suggests code that does not build"),
    ("style", "follows our naming and formatting", "wrong indentation and naming style"),
    ("verbosity", "short, focused suggestions", "suggestions are far too long"),
)


def _load_feedback(
    conn: psycopg.Connection[Any],
    rng: np.random.Generator,
    share: float,
    treated: npt.NDArray[np.bool_],
    ts: npt.NDArray[np.float64],
    suggestion: npt.NDArray[Any],
    common: Any,
) -> int:
    picked = np.flatnonzero(rng.random(len(treated)) < share)
    positive = rng.random(len(picked)) < np.where(treated[picked], 0.7, 0.55)
    theme = rng.integers(0, len(FEEDBACK_COMMENTS), len(picked))
    texts = np.array([[c[2].encode(), c[1].encode()] for c in FEEDBACK_COMMENTS])
    # Rated a few seconds after the suggestion was served.
    rows = common(picked, ts[picked] + 5.0) | {
        "rating_scale": ("text", const_bytes(b"thumbs", len(picked))),
        "rating": ("int2", np.where(positive, 1, -1).astype(np.int16)),
        "text": ("text", texts[theme, positive.astype(int)]),
        "target": ("text", const_bytes(b"suggestion", len(picked))),
        "suggestion_id": ("text", suggestion[picked]),
    }
    return copy_columns(conn, "feedback", rows)
