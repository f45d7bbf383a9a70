"""Assignment for the gateway: which arm of every running experiment serves a request.

``AssignmentService.assign`` never touches the database: it reads an immutable
``RegistrySnapshot`` that a background thread replaces whenever the registry version changes
(polled every ``refresh_interval_s``). Pausing or stopping an experiment is therefore a kill
switch that takes effect on the next refresh: a snapshot only holds running experiments.

The hot path is a dictionary lookup. Traffic repeats users, so results are cached per
(user, language, org, IDE) for as long as the snapshot lives; a new snapshot brings an empty
cache. Below that, each user's bucket positions are cached per seed across snapshots (they are
pure functions of seed and user), and composed variants per combination of arms, so a ramp
costs a few range checks per user rather than hashes and pydantic validation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from typing import TYPE_CHECKING, Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.db.connection import make_engine
from experiments.assignment.snapshot import (
    EMPTY_SNAPSHOT,
    ArmAssignment,
    CompiledExperiment,
    RegistrySnapshot,
    load_snapshot,
)
from experiments.definitions.registry import registry_version
from experiments.variants import Variant

if TYPE_CHECKING:
    from experiments.assignment.exposures import ExposureRecorder

__all__ = [
    "ArmAssignment",
    "Assignment",
    "AssignmentRequest",
    "AssignmentService",
]

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")

# Distinct (language, org, IDE) combinations whose candidate experiments are kept per snapshot.
CONTEXT_CACHE_SIZE = 10_000
# Distinct combinations of arms whose composed variant is kept per snapshot.
VARIANT_CACHE_SIZE = 10_000
# Longest wait between refresh attempts after failures (doubling from the refresh interval).
MAX_REFRESH_BACKOFF_S = 30.0


@dataclasses.dataclass(frozen=True, slots=True)
class AssignmentRequest:
    """Who asks and from where; ``session_id``, ``plugin_version`` and ``served_at`` (unix
    time of the request; None means now) only go on exposures."""

    user_id: str
    language: str
    org: str
    ide: str
    session_id: str | None = None
    plugin_version: str | None = None
    served_at: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Assignment:
    """The arms a request is in (ordered by layer, then experiment) and the variant to serve."""

    arms: tuple[ArmAssignment, ...]
    variant: Variant
    snapshot_version: int

    def arm_names(self) -> dict[str, str]:
        """Experiment key -> arm name, as ``completion_served.arms`` stores it."""
        return {arm.experiment: arm.arm for arm in self.arms}


class BoundedCache(Generic[K, V]):
    """A dictionary of at most about ``size`` entries that forgets the least recently used half.

    Two generations: hits in the old one are promoted, and when the new one fills up the old
    one is dropped whole. Every operation is O(1), with no per-hit bookkeeping; races between
    threads can only lose entries, which a cache may do.
    """

    __slots__ = ("_half", "_new", "_old")

    def __init__(self, size: int) -> None:
        if size < 2:
            raise ValueError(f"cache size must be at least 2, got {size}")
        self._half = size // 2
        self._new: dict[K, V] = {}
        self._old: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        """The cached value, or None."""
        value = self._new.get(key)
        if value is None:
            value = self._old.get(key)
            if value is not None:
                self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` under ``key``."""
        new = self._new
        if len(new) >= self._half:
            self._old = new
            new = self._new = {}
        new[key] = value

    def __len__(self) -> int:
        return len(self._new) + len(self._old)


class _State:
    """A snapshot with the caches that are only valid for it; replaced as one attribute."""

    __slots__ = ("candidates", "results", "snapshot", "variants")

    def __init__(self, snapshot: RegistrySnapshot, cache_size: int) -> None:
        self.snapshot = snapshot
        self.results: BoundedCache[tuple[str, str, str, str], Assignment] = BoundedCache(cache_size)
        self.candidates: BoundedCache[tuple[str, str, str], tuple[CompiledExperiment, ...]] = (
            BoundedCache(CONTEXT_CACHE_SIZE)
        )
        self.variants: BoundedCache[tuple[ArmAssignment, ...], Variant] = BoundedCache(
            VARIANT_CACHE_SIZE
        )


class AssignmentService:
    """Assigns requests to arms from an in-memory snapshot of the registry, refreshed on change.

    Until the first successful refresh the snapshot is empty and everyone gets the default
    variant. ``start()`` refreshes once and then keeps refreshing in a daemon thread.
    """

    def __init__(
        self,
        engine: Engine | str,
        default_variant: Variant,
        *,
        refresh_interval_s: float = 1.0,
        exposure_recorder: ExposureRecorder | None = None,
        # Users (and requests) kept in the caches: about 0.8 KB each when full.
        cache_size: int = 100_000,
    ) -> None:
        if refresh_interval_s <= 0:
            raise ValueError(f"refresh_interval_s must be positive, got {refresh_interval_s}")
        self._owns_engine = isinstance(engine, str)
        self._engine = make_engine(engine, pool_size=1) if isinstance(engine, str) else engine
        self.default_variant = default_variant
        self.refresh_interval_s = refresh_interval_s
        self.exposure_recorder = exposure_recorder
        self._cache_size = cache_size
        self._state = _State(EMPTY_SNAPSHOT, cache_size)
        # User -> position per seed; survives snapshots, since positions never change.
        self._positions: BoundedCache[str, dict[str, float]] = BoundedCache(cache_size)
        self._refresh_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_refreshed_at: dt.datetime | None = None
        """When the registry version was last read successfully (for monitoring)."""
        self.refresh_errors = 0
        """Failed refresh attempts since the service was made (each is logged)."""

    @property
    def snapshot(self) -> RegistrySnapshot:
        """The snapshot assignments are served from now."""
        return self._state.snapshot

    # --- the hot path ---------------------------------------------------------------------------

    def assign(self, request: AssignmentRequest) -> Assignment:
        """The arms and variant for ``request``. No database access, no lock."""
        state = self._state
        key = (request.user_id, request.language, request.org, request.ide)
        assignment = state.results.get(key)
        if assignment is None:
            assignment = self._compute(state, request)
            state.results.put(key, assignment)
            if assignment.arms and self.exposure_recorder is not None:
                # Only on a cache miss: a hit was served before, by this same snapshot.
                self.exposure_recorder.offer(request, assignment.arms)
        return assignment

    def _compute(self, state: _State, request: AssignmentRequest) -> Assignment:
        user_id = request.user_id
        context = (request.language, request.org, request.ide)
        candidates = state.candidates.get(context)
        if candidates is None:
            candidates = state.snapshot.candidates(
                language=request.language, org=request.org, ide=request.ide
            )
            state.candidates.put(context, candidates)
        if not candidates:
            return Assignment(
                arms=(), variant=self.default_variant, snapshot_version=state.snapshot.version
            )

        positions = self._positions.get(user_id)
        if positions is None:
            positions = {}
            self._positions.put(user_id, positions)
        chosen: list[ArmAssignment] = []
        layer_key = ""
        layer_position = 0.0
        for experiment in candidates:
            # Candidates come sorted by layer: consecutive ones usually share the position.
            if experiment.layer_position_key != layer_key:
                layer_key = experiment.layer_position_key
                cached = positions.get(layer_key)
                if cached is None:
                    cached = positions[layer_key] = experiment.hash_fn(
                        experiment.layer_seed, user_id
                    )
                layer_position = cached
            if not experiment.traffic_low <= layer_position < experiment.traffic_high:
                continue
            if experiment.coverage == 0.0:
                continue
            position = positions.get(experiment.position_key)
            if position is None:
                position = experiment.hash_fn(experiment.seed, user_id)
                positions[experiment.position_key] = position
            for arm in experiment.arms:
                if arm.low <= position < arm.high:
                    chosen.append(arm.assignment)
                    break

        arms = tuple(chosen)
        variant = state.variants.get(arms)
        if variant is None:
            variant = self._compose(state.snapshot, arms)
            state.variants.put(arms, variant)
        return Assignment(arms=arms, variant=variant, snapshot_version=state.snapshot.version)

    def _compose(self, snapshot: RegistrySnapshot, arms: tuple[ArmAssignment, ...]) -> Variant:
        # Arms come in snapshot order (layer, then key), the order overrides are applied in.
        overrides = {
            arm.assignment: arm.overrides
            for experiment in snapshot.experiments
            for arm in experiment.arms
        }
        variant = self.default_variant
        for assignment in arms:
            variant = variant.with_overrides(overrides[assignment])
        return variant

    # --- refreshing -----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Reload the snapshot if the registry version changed; True when it was replaced."""
        with self._refresh_lock, Session(self._engine) as session:
            version = registry_version(session)
            current = self._state.snapshot
            changed = version != current.version
            if changed:
                snapshot = load_snapshot(session)
                # One attribute assignment: a reader sees the old state or the new one, whole.
                self._state = _State(snapshot, self._cache_size)
                log.info(
                    "registry snapshot %d -> %d: %d running experiment(s)",
                    current.version,
                    snapshot.version,
                    len(snapshot.experiments),
                )
            self.last_refreshed_at = dt.datetime.now(dt.UTC)
            return changed

    def start(self) -> None:
        """Refresh now (a failure is logged; defaults are served) and then in the background."""
        if self._thread is not None:
            raise RuntimeError("the assignment service is already started")
        self._stopping.clear()
        self._try_refresh()
        self._thread = threading.Thread(
            target=self._refresh_loop, name="assignment-refresh", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop refreshing (waiting at most ``timeout_s``) and close an engine made here."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("assignment refresh thread still running after %.1f s", timeout_s)
            self._thread = None
        if self._owns_engine:
            self._engine.dispose()

    def _try_refresh(self) -> bool:
        # The refresh thread must outlive any failure (a database restart, a bad row): the
        # error is logged with its traceback and counted, and the current snapshot stays.
        try:
            self.refresh()
        except Exception:
            self.refresh_errors += 1
            log.exception("refreshing the experiment registry snapshot failed")
            return False
        return True

    def _refresh_loop(self) -> None:
        wait = self.refresh_interval_s
        while not self._stopping.wait(wait):
            if self._try_refresh():
                wait = self.refresh_interval_s
            else:
                wait = min(2 * wait, MAX_REFRESH_BACKOFF_S)
