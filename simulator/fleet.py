"""The simulated developers and when they ask for suggestions.

Every developer has their own random effects: how active they are, how often they accept
(logit-normal around the fleet's rate, plus a per-language offset), how much of what they accept
they keep, how fast they type, their IDE, org and one or two languages. ``plan_suggestions``
lays out their coding sessions over a span of simulated time and the trigger points in each.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

from collector.bulk import hex_ids
from simulator.scenario import Fleet

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# Working hours, in seconds after midnight UTC, when sessions start.
DAY_START_S = 8 * 3600
DAY_END_S = 19 * 3600
PLUGIN_VERSION = "1.6.0-sim"


@dataclasses.dataclass(frozen=True)
class Developers:
    """The fleet as column arrays, one row per developer."""

    user_ids: npt.NDArray[Any]  # bytes
    languages: tuple[str, ...]
    ides: tuple[str, ...]
    orgs: tuple[str, ...]
    lang1: I64
    lang2: I64
    ide: I64
    org: I64
    activity: F64
    accept_logit: F64
    persistence: F64
    typing_cpm: F64
    latency_factor: F64
    # Acceptance offset per language, shared by everyone (some languages complete better).
    language_logit: F64

    def __len__(self) -> int:
        return len(self.user_ids)

    def user_id(self, index: int) -> str:
        """The developer's id as text."""
        return bytes(self.user_ids[index]).decode()

    def take(self, rows: slice) -> Developers:
        """Some of the developers (the shared per-language offsets stay whole)."""
        values = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name not in ("languages", "ides", "orgs", "language_logit")
        }
        return dataclasses.replace(self, **{name: value[rows] for name, value in values.items()})


def make_developers(fleet: Fleet, rng: np.random.Generator, *, prefix: str) -> Developers:
    """Draw ``fleet.developers`` developers with their random effects."""
    n = fleet.developers
    languages = tuple(fleet.languages)
    shares = np.array([fleet.languages[name] for name in languages])
    ides = tuple(fleet.ides)
    ide_shares = np.array([fleet.ides[name] for name in ides])
    lang1 = rng.choice(len(languages), size=n, p=shares / shares.sum())
    second = rng.random(n) < fleet.second_language_share
    lang2 = np.where(second, rng.choice(len(languages), size=n, p=shares / shares.sum()), lang1)
    base = np.log(fleet.acceptance / (1 - fleet.acceptance))
    return Developers(
        user_ids=hex_ids(f"{prefix}-dev-".encode(), np.arange(n, dtype=np.int64), width=6),
        languages=languages,
        ides=ides,
        orgs=tuple(f"org-{i + 1}" for i in range(fleet.orgs)),
        lang1=lang1.astype(np.int64),
        lang2=lang2.astype(np.int64),
        ide=rng.choice(len(ides), size=n, p=ide_shares / ide_shares.sum()).astype(np.int64),
        org=rng.integers(0, fleet.orgs, n).astype(np.int64),
        # Gamma with mean 1: a few developers do much of the work.
        activity=rng.gamma(2.0, 0.5, n),
        accept_logit=base + rng.normal(0.0, fleet.acceptance_user_sd, n),
        persistence=np.clip(rng.normal(fleet.persistence, 0.05, n), 0.3, 0.99),
        typing_cpm=fleet.manual_chars_per_minute * rng.lognormal(0.0, 0.3, n),
        latency_factor=rng.lognormal(0.0, 0.15, n),
        language_logit=rng.normal(0.0, 0.25, len(languages)),
    )


@dataclasses.dataclass(frozen=True)
class Suggestions:
    """Trigger points, one row per suggestion requested, ordered by time."""

    user: I64  # index into Developers
    session: I64  # index into Sessions
    ts: F64  # unix time the suggestion was requested
    language: I64
    manual: npt.NDArray[np.bool_]  # triggered by hand rather than automatically

    def __len__(self) -> int:
        return len(self.ts)


@dataclasses.dataclass(frozen=True)
class Sessions:
    """Coding sessions, one row each."""

    ids: npt.NDArray[Any]  # bytes
    user: I64
    start: F64
    end: F64
    language: I64


def plan_suggestions(
    developers: Developers,
    fleet: Fleet,
    rng: np.random.Generator,
    *,
    start: float,
    end: float,
    first_session: int = 0,
) -> tuple[Sessions, Suggestions]:
    """Sessions starting in [start, end) (unix seconds) and the suggestions asked in them."""
    days = max((end - start) / 86_400, 1e-9)
    counts = rng.poisson(developers.activity * fleet.sessions_per_day * days)
    user = np.repeat(np.arange(len(developers)), counts).astype(np.int64)
    k = len(user)
    # Sessions start in working hours of the days the span covers, then are kept in the span.
    first_day = np.floor(start / 86_400) * 86_400
    day = first_day + 86_400 * rng.integers(0, int(np.ceil(days)) + 1, k)
    begin = day + rng.uniform(DAY_START_S, DAY_END_S, k)
    keep = (begin >= start) & (begin < end)
    # Top up the dropped ones uniformly inside the span so the rate stays as asked.
    begin = np.where(keep, begin, rng.uniform(start, end, k))
    length = rng.gamma(2.0, fleet.session_minutes * 30.0, k)
    finish = np.minimum(begin + length, end)
    second = rng.random(k) < 0.3
    language = np.where(second, developers.lang2[user], developers.lang1[user])
    ids = hex_ids(b"s", first_session + np.arange(k, dtype=np.int64), width=10)
    sessions = Sessions(ids=ids, user=user, start=begin, end=finish, language=language)

    per_session = rng.poisson(
        fleet.suggestions_per_session * developers.activity[user] * (finish - begin) / length
    )
    session = np.repeat(np.arange(k), per_session).astype(np.int64)
    ts = begin[session] + rng.random(len(session)) * (finish - begin)[session]
    order = np.argsort(ts, kind="stable")
    session, ts = session[order], ts[order]
    suggestions = Suggestions(
        user=user[session],
        session=session,
        ts=ts,
        language=language[session],
        manual=rng.random(len(session)) < 0.15,
    )
    return sessions, suggestions
