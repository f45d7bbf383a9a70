"""Direct mode: the whole scenario generated with numpy and bulk-loaded with binary COPY.

No gateway and no HTTP: a stand-in assigns arms exactly as the gateway does (same bucketing,
layer split, coverage and targeting), serves completions with a latency and an error rate, and
the developers' events follow from ``Behaviour``. Developers are generated in chunks, so memory
stays bounded at millions of events. Loading uses the collector store's write path (binary
COPY into staging, then a de-duplicating INSERT); the rows are what the collector would have
stored for the same events.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from collector.bulk import const_bytes, hex_ids, load_columns
from experiments.assignment.exposures import exposure_id
from experiments.definitions.bucketing import BUCKETING_VERSIONS, arm_ranges, choose_arm, layer_seed
from experiments.definitions.config import ExperimentConfig
from simulator.behaviour import Behaviour, Served, Table, Truth, common_columns
from simulator.fleet import (
    PLUGIN_VERSION,
    Developers,
    Sessions,
    Suggestions,
    make_developers,
    plan_suggestions,
)
from simulator.scenario import Scenario

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

MODEL = "codelift-fim-small"
EMPTY_COMPLETION_SHARE = 0.05
# Sessions end this long before midnight (persistence checks come up to 10 minutes later).
END_MARGIN_S = 15 * 60


@dataclasses.dataclass(frozen=True)
class Timeline:
    """Simulated time: history before the experiment, then the experiment's days."""

    start: float
    experiment_start: float
    end: float

    @classmethod
    def for_scenario(cls, scenario: Scenario, end: float | None = None) -> Timeline:
        """The scenario's span, ending ``end`` (unix seconds).

        By default it ends a little before the last UTC midnight: sessions then fall at the same
        times of day whatever the date, so a seed always gives the same events (shifted by
        whole days), and the last persistence checks still lie in the past.
        """
        midnight = float(np.floor(time.time() / 86_400) * 86_400)
        stop = end if end is not None else midnight - END_MARGIN_S
        begin = stop - (scenario.pre_days + scenario.days) * 86_400
        return cls(start=begin, experiment_start=begin + scenario.pre_days * 86_400, end=stop)


def user_arms(config: ExperimentConfig, coverage: float, user_ids: list[str]) -> I64:
    """Each user's arm index (-1: not in the experiment), as the gateway would assign it."""
    arms = np.full(len(user_ids), -1, dtype=np.int64)
    if coverage <= 0:
        return arms
    hash_fn = BUCKETING_VERSIONS[config.bucketing_version]
    ranges = arm_ranges([arm.weight for arm in config.arms], coverage)
    seed, layer = config.effective_seed, layer_seed(config.layer)
    low, high = config.traffic
    for index, user in enumerate(user_ids):
        if low <= hash_fn(layer, user) < high:
            chosen = choose_arm(hash_fn(seed, user), ranges)
            if chosen is not None:
                arms[index] = chosen
    return arms


def targeted_mask(config: ExperimentConfig, developers: Developers) -> npt.NDArray[np.bool_]:
    """[language, org, ide] -> whether the experiment targets that combination."""
    mask = np.zeros(
        (len(developers.languages), len(developers.orgs), len(developers.ides)), dtype=bool
    )
    for i, language in enumerate(developers.languages):
        for j, org in enumerate(developers.orgs):
            for k, ide in enumerate(developers.ides):
                mask[i, j, k] = config.targeting.matches(language=language, org=org, ide=ide)
    return mask


@dataclasses.dataclass
class DirectResult:
    """What a direct run loaded."""

    rows: dict[str, int]
    truth: Truth
    users_per_arm: dict[str, int]
    seconds: float
    timeline: Timeline

    @property
    def events(self) -> int:
        """Every row loaded."""
        return sum(self.rows.values())


def with_received_at(table: Table) -> Table:
    """The rows with the server's received_at, a second after each event's client time."""
    columns, nulls = table
    stamp = columns["client_ts"][1] + 1_000_000
    return columns | {"received_at": ("timestamptz", stamp)}, nulls


def run_direct(
    conn: psycopg.Connection[Any],
    scenario: Scenario,
    *,
    timeline: Timeline | None = None,
    coverage: float | None = None,
    chunk_developers: int = 20_000,
    progress: Callable[[int, int], None] | None = None,
    commit: bool = True,
) -> DirectResult:
    """Generate the scenario and COPY it in (partitions for its days must exist).

    With ``commit`` each chunk of developers is committed; without, the caller's transaction
    holds everything (tests roll it back).
    """
    started = time.perf_counter()
    span = timeline or Timeline.for_scenario(scenario)
    config = scenario.experiment
    arm_names = tuple(arm.name for arm in config.arms)
    rng = np.random.default_rng(scenario.seed)
    everyone = make_developers(scenario.fleet, rng, prefix=scenario.name)
    cover = config.initial_coverage if coverage is None else coverage
    targeted = targeted_mask(config, everyone)
    rows: dict[str, int] = {}
    truth = Truth()
    users_per_arm = dict.fromkeys(arm_names, 0)
    sessions_made = suggestions_made = 0
    for first in range(0, len(everyone), chunk_developers):
        developers = everyone.take(slice(first, first + chunk_developers))
        ids = [bytes(raw).decode() for raw in developers.user_ids]
        arm_of_user = user_arms(config, cover, ids)
        sessions, suggestions = plan_suggestions(
            developers,
            scenario.fleet,
            rng,
            start=span.start,
            end=span.end,
            first_session=sessions_made,
        )
        user = suggestions.user
        arm = np.where(
            (suggestions.ts >= span.experiment_start)
            & targeted[suggestions.language, developers.org[user], developers.ide[user]],
            arm_of_user[user],
            -1,
        )
        exposed_at = np.full(len(developers), np.inf)
        np.minimum.at(exposed_at, user[arm >= 0], suggestions.ts[arm >= 0])
        n = len(suggestions)
        base_latency = (
            scenario.fleet.latency_ms
            * developers.latency_factor[user]
            * rng.lognormal(0.0, 0.35, n)
        )
        chars = np.where(rng.random(n) < EMPTY_COMPLETION_SHARE, 0, 1 + rng.poisson(45, n)).astype(
            np.int64
        )
        served = Served(
            suggestion_ids=hex_ids(b"sim-", suggestions_made + np.arange(n, dtype=np.int64)),
            arm=arm,
            exposed_at=exposed_at,
            latency_ms=base_latency,
            error=rng.random(n) < scenario.fleet.error_rate,
            chars=chars,
            lines=np.where(chars > 0, 1 + chars // 40, 0).astype(np.int64),
        )
        behaviour = Behaviour(scenario=scenario, developers=developers, arm_names=arm_names)
        served = dataclasses.replace(
            served,
            latency_ms=base_latency + behaviour.lifts("latency_ms", arm, suggestions, served),
        )
        truth.add(behaviour.truth(suggestions, served, base_latency))
        tables = behaviour.events(sessions, suggestions, served, rng)
        tables["completion_served"] = _completion_served(
            behaviour, sessions, suggestions, served, config.key, arm_names, rng
        )
        tables["exposure"] = _exposures(
            behaviour, sessions, suggestions, served, config.key, arm_names, rng
        )
        for arm_index, name in enumerate(arm_names):
            users_per_arm[name] += int(np.sum(np.isfinite(exposed_at) & (arm_of_user == arm_index)))
        for table, payload in tables.items():
            columns, nulls = with_received_at(payload)
            rows[table] = rows.get(table, 0) + load_columns(conn, table, columns, nulls)
        if commit:
            conn.commit()
        sessions_made += len(sessions.ids)
        suggestions_made += n
        if progress is not None:
            progress(min(len(everyone), first + chunk_developers), len(everyone))
    return DirectResult(
        rows=rows,
        truth=truth,
        users_per_arm=users_per_arm,
        seconds=time.perf_counter() - started,
        timeline=span,
    )


def _completion_served(
    behaviour: Behaviour,
    sessions: Sessions,
    suggestions: Suggestions,
    served: Served,
    experiment: str,
    arm_names: tuple[str, ...],
    rng: np.random.Generator,
) -> Table:
    n = len(suggestions)
    columns = common_columns(
        behaviour.developers,
        sessions,
        rng,
        suggestions.user,
        suggestions.session,
        suggestions.language,
        suggestions.ts,
    )
    # Index 0 is "no arm": the served arm's index is shifted by one.
    arms_json = np.array([b"{}", *(json.dumps({experiment: name}).encode() for name in arm_names)])
    errors = served.error
    return (
        columns
        | {
            "suggestion_id": ("text", served.suggestion_ids),
            "request_id": ("text", served.suggestion_ids),
            "arms": ("jsonb", arms_json[served.arm + 1]),
            "model": ("text", const_bytes(MODEL.encode(), n)),
            "adapter": ("text", const_bytes(b"", n)),
            "latency_ms": ("float8", served.latency_ms),
            "backend_latency_ms": ("float8", served.latency_ms * 0.97),
            "prompt_tokens": ("int4", rng.integers(200, 2048, n).astype(np.int32)),
            "completion_chars": ("int4", np.where(errors, 0, served.chars).astype(np.int32)),
            "completion_lines": ("int4", np.where(errors, 0, served.lines).astype(np.int32)),
            "finish_reason": ("text", np.where(errors, b"error", b"stop")),
            "error": ("text", const_bytes(b"backend timed out", n)),
        },
        {"adapter": np.ones(n, dtype=bool), "error": ~errors},
    )


def _exposures(
    behaviour: Behaviour,
    sessions: Sessions,
    suggestions: Suggestions,
    served: Served,
    experiment: str,
    arm_names: tuple[str, ...],
    rng: np.random.Generator,
) -> Table:
    # The first suggestion an arm served each user, with the gateway's deterministic event id.
    hits = np.flatnonzero(served.arm >= 0)
    _, first = np.unique(suggestions.user[hits], return_index=True)
    rows = hits[first]
    developers = behaviour.developers
    columns = common_columns(
        developers,
        sessions,
        rng,
        suggestions.user[rows],
        suggestions.session[rows],
        suggestions.language[rows],
        suggestions.ts[rows],
    )
    ids = np.array(
        [
            exposure_id(experiment, bytes(developers.user_ids[u]).decode()).bytes
            for u in suggestions.user[rows]
        ],
        dtype="S16",
    )
    names = np.array([name.encode() for name in arm_names])
    return (
        columns
        | {
            "event_id": ("uuid", ids),
            "plugin_version": ("text", const_bytes(PLUGIN_VERSION.encode(), len(rows))),
            "experiment": ("text", const_bytes(experiment.encode(), len(rows))),
            "arm": ("text", names[served.arm[rows]]),
            "suggestion_id": ("text", served.suggestion_ids[rows]),
        },
        {},
    )
