"""What developers do with the suggestions they were served, and the events that says.

Given the suggestions served (arm, latency, error, completion size) this decides, vectorised,
which are shown, accepted in full or in part, dismissed or ignored, which accepted text is still
there at 30/120/300/600 s and how edited, how much each developer types by hand per five-minute
window, and who leaves feedback. The arm's true effects (``Scenario.effects``) act on the
suggestions the arm served, after the developer's exposure.

It also returns the truth the analysis should find: the acceptance rate every treatment arm
would have over the same suggestions against the control's (potential outcomes), per language.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import numpy as np
import numpy.typing as npt

from collector.bulk import Column, const_bytes, pg_time, random_uuids
from simulator import feedback_text
from simulator.fleet import PLUGIN_VERSION, Developers, Sessions, Suggestions
from simulator.scenario import EffectKind, Scenario

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

# A table's rows: columns (binary COPY type, values) and which values are NULL.
Table = tuple[dict[str, Column], dict[str, Bools]]

CHECKPOINTS = (30, 120, 300, 600)
# Suggestions displayed shorter than the "shown" threshold (750 ms) when not accepted.
FLASH_SHARE = 0.25
MAX_ACCEPTANCE = 0.95
PARTIAL_SHARE = 0.2
MANUAL_TRIGGER_LOGIT = 0.8
TYPING_WINDOW_S = 300.0


@dataclasses.dataclass(frozen=True)
class Served:
    """What the gateway (or its stand-in) answered, one row per suggestion."""

    suggestion_ids: npt.NDArray[Any]  # bytes
    arm: I64  # index into the experiment's arms; -1 when no arm served it
    exposed_at: F64  # the developer's exposure (unix time), inf when not exposed
    latency_ms: F64
    error: Bools
    chars: I64
    lines: I64


@dataclasses.dataclass
class Truth:
    """Sums for the true acceptance-rate lift per (treatment arm, language or None)."""

    # (arm, language) -> [Σ accepted probability, Σ shown probability], under that arm.
    acceptance: dict[tuple[str, str | None], list[float]] = dataclasses.field(default_factory=dict)
    # (arm, language) -> [Σ latency_ms, served], as if every suggestion were served by that arm.
    latency: dict[tuple[str, str | None], list[float]] = dataclasses.field(default_factory=dict)

    def add(self, other: Truth) -> None:
        """Accumulate another chunk's sums."""
        for mine, theirs in ((self.acceptance, other.acceptance), (self.latency, other.latency)):
            for key, (a, b) in theirs.items():
                sums = mine.setdefault(key, [0.0, 0.0])
                sums[0] += a
                sums[1] += b

    def relative_lift(self, metric: str, arm: str, control: str, language: str | None) -> float:
        """The true relative lift of ``metric`` in ``arm`` over ``control``."""
        sums = self.acceptance if metric == "acceptance_rate" else self.latency
        treated, base = sums.get((arm, language)), sums.get((control, language))
        if not treated or not base or not treated[1] or not base[1] or not base[0]:
            return float("nan")
        return (treated[0] / treated[1]) / (base[0] / base[1]) - 1.0


def effect_lifts(
    scenario: Scenario,
    kind: EffectKind,
    arm_names: tuple[str, ...],
    arm: I64,
    language: I64,
    languages: tuple[str, ...],
    days_since_exposure: F64,
) -> F64:
    """Per suggestion, the summed true effects of ``kind`` of the arm that served it."""
    lift = np.zeros(len(arm))
    for effect in scenario.effects:
        if effect.kind != kind or effect.arm not in arm_names:
            continue
        mask = arm == arm_names.index(effect.arm)
        if effect.languages:
            wanted = [languages.index(name) for name in effect.languages]
            mask &= np.isin(language, wanted)
        fade = np.power(0.5, np.maximum(days_since_exposure, 0.0) / effect.novelty_half_life_days)
        lift += np.where(mask, effect.value + effect.novelty * fade, 0.0)
    return lift


def _sigmoid(x: F64) -> F64:
    result: F64 = 1.0 / (1.0 + np.exp(-x))
    return result


def common_columns(
    developers: Developers,
    sessions: Sessions,
    rng: np.random.Generator,
    user: I64,
    session: I64,
    language: I64,
    when: F64,
) -> dict[str, Column]:
    n = len(user)
    langs = np.array([name.encode() for name in developers.languages])
    ides = np.array([name.encode() for name in developers.ides])
    return {
        "event_id": ("uuid", random_uuids(rng, n)),
        "client_ts": ("timestamptz", pg_time(when)),
        "schema_version": ("int2", np.ones(n, dtype=np.int16)),
        "user_id": ("text", developers.user_ids[user]),
        "session_id": ("text", sessions.ids[session]),
        "ide": ("text", ides[developers.ide[user]]),
        "plugin_version": ("text", const_bytes(PLUGIN_VERSION.encode(), n)),
        "language": ("text", langs[language]),
    }


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """The developers' side of a scenario: outcomes, persistence, typing and feedback."""

    scenario: Scenario
    developers: Developers
    arm_names: tuple[str, ...]

    def acceptance_base(self, suggestions: Suggestions) -> F64:
        """Each suggestion's acceptance probability before any arm's effect."""
        logit = (
            self.developers.accept_logit[suggestions.user]
            + self.developers.language_logit[suggestions.language]
            + MANUAL_TRIGGER_LOGIT * suggestions.manual
        )
        return _sigmoid(logit)

    def lifts(self, kind: EffectKind, arm: I64, suggestions: Suggestions, served: Served) -> F64:
        """The true effects of ``kind`` on each suggestion, given the arm that served it."""
        days = (suggestions.ts - served.exposed_at[suggestions.user]) / 86_400
        return effect_lifts(
            self.scenario,
            kind,
            self.arm_names,
            arm,
            suggestions.language,
            self.developers.languages,
            np.where(np.isfinite(days), days, 0.0),
        )

    def truth(self, suggestions: Suggestions, served: Served, base_latency: F64) -> Truth:
        """Potential outcomes over the suggestions some arm served: each arm's expected sums."""
        truth = Truth()
        in_experiment = served.arm >= 0
        if not in_experiment.any() or not self.arm_names:
            return truth
        base = self.acceptance_base(suggestions)
        eligible = in_experiment & ~served.error & (served.chars > 0)
        for index, name in enumerate(self.arm_names):
            as_if = np.where(in_experiment, index, -1)
            p = np.minimum(
                MAX_ACCEPTANCE, base * (1 + self.lifts("acceptance", as_if, suggestions, served))
            )
            shown = p + (1 - p) * (1 - FLASH_SHARE)
            latency = base_latency + self.lifts("latency_ms", as_if, suggestions, served)
            for language in (None, *range(len(self.developers.languages))):
                where = (
                    eligible if language is None else eligible & (suggestions.language == language)
                )
                key = (name, None if language is None else self.developers.languages[language])
                truth.acceptance[key] = [float(p[where].sum()), float(shown[where].sum())]
                served_here = (
                    in_experiment
                    if language is None
                    else in_experiment & (suggestions.language == language)
                )
                truth.latency[key] = [float(latency[served_here].sum()), float(served_here.sum())]
        return truth

    def events(
        self,
        sessions: Sessions,
        suggestions: Suggestions,
        served: Served,
        rng: np.random.Generator,
    ) -> dict[str, Table]:
        """The IDE's events for these suggestions and sessions (not completion_served/exposure)."""
        dev = self.developers
        p = np.minimum(
            MAX_ACCEPTANCE,
            self.acceptance_base(suggestions)
            * (1 + self.lifts("acceptance", served.arm, suggestions, served)),
        )
        visible = np.flatnonzero(~served.error & (served.chars > 0))
        accepted = rng.random(len(visible)) < p[visible]
        partial = accepted & (rng.random(len(visible)) < PARTIAL_SHARE)
        flash = ~accepted & (rng.random(len(visible)) < FLASH_SHARE)
        display = np.where(
            accepted,
            rng.lognormal(np.log(1100.0), 0.5, len(visible)),
            np.where(
                flash,
                rng.uniform(80.0, 700.0, len(visible)),
                rng.lognormal(np.log(2400.0), 0.6, len(visible)),
            ),
        )
        display = np.minimum(display, 600_000.0)
        chars = served.chars[visible]
        lines = served.lines[visible]
        shown_ts = suggestions.ts[visible] + served.latency_ms[visible] / 1000
        outcome_ts = shown_ts + display / 1000
        user, session, language = (
            suggestions.user[visible],
            suggestions.session[visible],
            suggestions.language[visible],
        )
        ids = served.suggestion_ids[visible]
        tables: dict[str, Table] = {}

        def common(index: I64, when: F64) -> dict[str, Column]:
            return common_columns(
                dev, sessions, rng, user[index], session[index], language[index], when
            )

        everyone = np.arange(len(visible))
        triggers = np.array([b"auto", b"manual"])
        tables["suggestion_shown"] = (
            common(everyone, shown_ts)
            | {
                "suggestion_id": ("text", ids),
                "display_ms": ("float8", display),
                "chars": ("int4", chars.astype(np.int32)),
                "lines": ("int4", lines.astype(np.int32)),
                "multiline": ("bool", (lines > 1).astype(np.uint8)),
                "trigger": ("text", triggers[suggestions.manual[visible].astype(int)]),
            },
            {},
        )
        fraction = np.where(partial, rng.uniform(0.3, 0.9, len(visible)), 1.0)
        accepted_chars = np.where(accepted, np.maximum(1, np.round(chars * fraction)), 0)
        accepted_lines = np.where(accepted, np.maximum(1, np.ceil(lines * fraction)), 0)
        dismissed = rng.random(len(visible)) < 0.45
        kinds = np.where(partial, 1, np.where(accepted, 0, np.where(dismissed, 2, 3)))
        outcomes = np.array([b"accepted", b"partially_accepted", b"dismissed", b"ignored"])
        tables["suggestion_outcome"] = (
            common(everyone, outcome_ts)
            | {
                "suggestion_id": ("text", ids),
                "outcome": ("text", outcomes[kinds]),
                "accepted_chars": ("int4", accepted_chars.astype(np.int32)),
                "accepted_lines": ("int4", accepted_lines.astype(np.int32)),
                "reason": ("text", const_bytes(b"", len(visible))),
            },
            {"reason": np.ones(len(visible), dtype=bool)},
        )
        tables["persistence_check"] = self._persistence(
            common, served, suggestions, visible, accepted, accepted_chars, outcome_ts, ids, rng
        )
        tables["typing_volume"] = self._typing(sessions, session, accepted_chars, outcome_ts, rng)
        tables["feedback"] = self._feedback(sessions, session, accepted, ids, outcome_ts, rng)
        return tables

    def _persistence(
        self,
        common: Any,
        served: Served,
        suggestions: Suggestions,
        visible: I64,
        accepted: Bools,
        accepted_chars: F64,
        outcome_ts: F64,
        ids: npt.NDArray[Any],
        rng: np.random.Generator,
    ) -> Table:
        taken = np.flatnonzero(accepted)
        keep_lift = self.lifts("persistence", served.arm, suggestions, served)[visible[taken]]
        keep = self.developers.persistence[suggestions.user[visible[taken]]]
        # One draw per suggestion across checkpoints: once removed, it stays removed.
        survive = rng.random(len(taken))
        heavy = rng.random(len(taken)) < 0.12
        parts: list[tuple[I64, int, Bools, F64]] = []
        for step, checkpoint in enumerate(CHECKPOINTS):
            reached = rng.random(len(taken)) < 0.98 ** (step + 1)
            present = survive < np.minimum(0.99, keep ** (step + 1) * (1 + keep_lift))
            ratio = np.where(
                heavy,
                rng.beta(5.0, 3.0, len(taken)),
                rng.beta(1.2, 8.0, len(taken)) * (step + 1) / 4,
            )
            ratio = np.where(present, np.clip(ratio, 0.0, 1.0), 1.0)
            parts.append((taken[reached], checkpoint, present[reached], ratio[reached]))
        at = np.concatenate([part[0] for part in parts])
        checkpoints = np.concatenate([np.full(len(part[0]), part[1]) for part in parts])
        present = np.concatenate([part[2] for part in parts])
        ratio = np.concatenate([part[3] for part in parts])
        remaining = np.where(present, accepted_chars[at] * (1 - ratio), 0)
        statuses = np.array([b"removed", b"present"])
        return (
            common(at, outcome_ts[at] + checkpoints)
            | {
                "suggestion_id": ("text", ids[at]),
                "checkpoint_s": ("int2", checkpoints.astype(np.int16)),
                "status": ("text", statuses[present.astype(int)]),
                "edit_distance_ratio": ("float8", ratio.astype(np.float64)),
                "chars_remaining": ("int4", np.round(remaining).astype(np.int32)),
            },
            {},
        )

    def _typing(
        self,
        sessions: Sessions,
        session_of: I64,
        accepted_chars: F64,
        outcome_ts: F64,
        rng: np.random.Generator,
    ) -> Table:
        dev = self.developers
        windows = np.maximum(1, np.ceil((sessions.end - sessions.start) / TYPING_WINDOW_S))
        windows = windows.astype(np.int64)
        first = np.concatenate([[0], np.cumsum(windows)[:-1]]).astype(np.int64)
        total = int(windows.sum())
        owner = np.repeat(np.arange(len(windows)), windows)
        index = np.arange(total) - first[owner]
        start = sessions.start[owner] + index * TYPING_WINDOW_S
        end = np.minimum(start + TYPING_WINDOW_S, np.maximum(sessions.end[owner], start + 1))
        ai = np.zeros(total)
        slot = np.floor((outcome_ts - sessions.start[session_of]) / TYPING_WINDOW_S).astype(
            np.int64
        )
        slot = first[session_of] + np.clip(slot, 0, windows[session_of] - 1)
        np.add.at(ai, slot, accepted_chars)
        user = sessions.user[owner]
        minutes = (end - start) / 60
        manual = rng.poisson(dev.typing_cpm[user] * minutes * rng.uniform(0.3, 1.0, total))
        paste = np.where(rng.random(total) < 0.08, rng.poisson(250, total), 0)
        bulk = np.where(rng.random(total) < 0.03, rng.poisson(400, total), 0)
        undo = np.where(rng.random(total) < 0.1, rng.poisson(20, total), 0)
        columns = common_columns(dev, sessions, rng, user, owner, sessions.language[owner], end) | {
            "window_start": ("timestamptz", pg_time(start)),
            "window_end": ("timestamptz", pg_time(end)),
            "chars_typed_manual": ("int4", manual.astype(np.int32)),
            "chars_accepted_ai": ("int4", ai.astype(np.int32)),
            "chars_deleted": ("int4", rng.poisson(0.15 * manual).astype(np.int32)),
            "chars_excluded_paste": ("int4", paste.astype(np.int32)),
            "chars_excluded_bulk": ("int4", bulk.astype(np.int32)),
            "chars_excluded_undo_redo": ("int4", undo.astype(np.int32)),
        }
        return columns, {}

    def _feedback(
        self,
        sessions: Sessions,
        session_of: I64,
        accepted: Bools,
        ids: npt.NDArray[Any],
        outcome_ts: F64,
        rng: np.random.Generator,
    ) -> Table:
        fleet = self.scenario.fleet
        k = len(sessions.user)
        shown = np.bincount(session_of, minlength=k)
        taken = np.bincount(session_of, weights=accepted.astype(float), minlength=k)
        rate = np.where(shown > 0, taken / np.maximum(shown, 1), 0.0)
        chance = min(1.0, fleet.feedback_per_day / fleet.sessions_per_day)
        chosen = np.flatnonzero(rng.random(k) < chance)
        # Sessions that went well give praise: from 45% positive at no acceptance upwards.
        positive = rng.random(len(chosen)) < np.clip(0.45 + 1.5 * rate[chosen], 0.05, 0.97)
        # The session's last shown suggestion, for feedback about a suggestion.
        last = np.full(k, -1, dtype=np.int64)
        last[session_of] = np.arange(len(session_of))
        stars = rng.random(len(chosen)) < 0.4
        target_draw = rng.random(len(chosen))
        scales, ratings, texts, targets, suggestion_ids = [], [], [], [], []
        for i, s in enumerate(chosen):
            good = bool(positive[i])
            if stars[i]:
                scales.append(b"stars")
                ratings.append(int(rng.integers(4, 6)) if good else int(rng.integers(1, 3)))
            else:
                scales.append(b"thumbs")
                ratings.append(1 if good else -1)
            language = self.developers.languages[int(sessions.language[s])]
            text = b""
            if rng.random() < 0.75:
                theme = feedback_text.pick_theme(rng, positive=good)
                text = feedback_text.compose(
                    rng, theme=theme, positive=good, language=language
                ).encode()
            texts.append(text)
            if target_draw[i] < 0.5 and last[s] >= 0:
                targets.append(b"suggestion")
                suggestion_ids.append(bytes(ids[last[s]]))
            else:
                targets.append(b"session" if target_draw[i] < 0.85 else b"product")
                suggestion_ids.append(b"")
        n = len(chosen)
        when = sessions.end[chosen] + rng.uniform(1.0, 60.0, n)
        text_array = np.array(texts, dtype=object).astype(bytes) if n else const_bytes(b"", 0)
        sid_array = (
            np.array(suggestion_ids, dtype=object).astype(bytes) if n else const_bytes(b"", 0)
        )
        columns = common_columns(
            self.developers,
            sessions,
            rng,
            sessions.user[chosen],
            chosen,
            sessions.language[chosen],
            when,
        ) | {
            "feedback_id": ("uuid", random_uuids(rng, n)),
            "rating_scale": ("text", np.array(scales, dtype="S6") if n else const_bytes(b"", 0)),
            "rating": ("int2", np.array(ratings, dtype=np.int16)),
            "text": ("text", text_array),
            "target": ("text", np.array(targets, dtype="S10") if n else const_bytes(b"", 0)),
            "suggestion_id": ("text", sid_array),
        }
        nulls = {
            "text": np.array([not t for t in texts], dtype=bool),
            "suggestion_id": np.array([not s for s in suggestion_ids], dtype=bool),
        }
        return columns, nulls


def uuid_text(raw: bytes) -> str:
    """A 16-byte uuid value as its text form."""
    return str(uuid.UUID(bytes=raw))
