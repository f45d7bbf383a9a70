"""Per-event contributions: what each event adds to a user's metric components, as SQL.

Both sources are built from these: the raw source sums ``contribution_ctes`` per user, and the
rollups (``experiments.analysis.rollups``) store the same sums per (day, user, language).

What each event adds (docs/metrics.md), and the choices made where the definitions are silent:

- A user is in the arm of their exposure row; only events with ``client_ts`` at or after the
  exposure count (every event type). The CUPED pre-period is the ``pre_period_days`` whole UTC
  days before the exposure day plus the exposure day up to the exposure instant.
- Every event counts at its own ``client_ts`` (a suggestion's events may straddle a day). The
  events of one suggestion are linked by (user_id, suggestion_id) within ``LINK_WINDOW`` of each
  other, in both sources alike.
- shown: a suggestion_shown event with ``display_ms >= 750``, plus an accepted outcome whose
  suggestion has no such event (shown chars: the shown event's chars, else the accepted chars).
  accepted: an outcome ``accepted`` or ``partially_accepted`` (chars: ``accepted_chars``).
- CPR@t: a persistence_check at t of an accepted suggestion "reached" t; it persisted when
  ``status = 'present'`` and ``edit_distance_ratio < 0.33``. The char-weighted variant weights
  each suggestion by its ``accepted_chars`` (so it stays a share in [0, 1], unlike
  ``chars_remaining``, which grows when the developer extends the text).
- % code written: ``chars_accepted_ai / (chars_typed_manual + chars_accepted_ai)`` of
  typing_volume (the client already leaves pastes, bulk edits and undo/redo out of both).
- latency_mean_per_completion, error_rate, display_rate, acceptance_per_opportunity: ratios
  over completion_served (display: shown as above / served). suggestions_per_user: shown per
  active user (a mean metric).
- A ratio metric's n counts every analysed user (all languages) or every user with events in
  the language (per language); the mean metric's n counts active users (any suggestion served
  or shown after exposure).
- Latency quantiles come from per-user histograms with buckets 4% wide (``quantiles_sql``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping

import sqlalchemy
from sqlalchemy import text

from experiments.analysis.stats.quantiles import BUCKET_BASE

CHECKPOINTS = (30, 120, 300, 600)
SHOWN_MIN_DISPLAY_MS = 750
PERSISTED_MAX_EDIT_RATIO = 0.33
ACCEPTED_OUTCOMES = "('accepted', 'partially_accepted')"
# Events of one suggestion further apart than this are not linked (checks come 600 s after
# acceptance at most; a day leaves room for clock skew and sleeping laptops).
LINK_WINDOW = "interval '1 day'"
# Latency histogram: bucket k >= 1 holds [BASE^k, BASE^(k+1)) ms; bucket 0 holds [0, BASE). One
# value for the SQL that writes the histograms and the statistics that read them.
LATENCY_BUCKET_BASE = BUCKET_BASE

COMPONENTS = (
    "shown_n",
    "shown_chars",
    "accepted_n",
    "accepted_chars",
    "typed_chars",
    "ai_chars",
    *(
        f"{name}_{t}"
        for t in CHECKPOINTS
        for name in ("reached", "persisted", "reached_chars", "persisted_chars")
    ),
    "served_n",
    "error_n",
    "latency_sum",
)


# --- per-event contributions --------------------------------------------------------------------


def _select(values: Mapping[str, str]) -> str:
    return ", ".join(f"{values.get(name, '0')} AS {name}" for name in COMPONENTS)


def _latency_bucket(column: str) -> str:
    return f"greatest(0, floor(ln(greatest({column}, 1.0)) / ln({LATENCY_BUCKET_BASE})))::int"


def contribution_ctes(*, windowed: bool, where: str = "") -> str:
    """CTEs ``contrib`` (one row per counted event: user_id, language, ts, the components) and
    ``srv`` (served completions with their latency bucket), over events in [:lo, :hi).

    With ``windowed``, events are also restricted to each user's rows of a ``win`` CTE
    (user_id, experiment, arm, lo, split, hi): lo <= ts < hi, and carry ``experiment``, ``arm``
    and ``post`` (ts >= split). ``where`` is an extra condition on every counted event ``ev``
    (e.g. ``ev.ide = ANY(:ides)``); linked events are found whatever it says.
    """
    if windowed:
        join = "JOIN win w ON w.user_id = ev.user_id"
        cond = "ev.client_ts >= w.lo AND ev.client_ts < w.hi AND "
        carry = ", w.experiment, w.arm, ev.client_ts >= w.split AS post"
        keep = ", a.experiment, a.arm, a.post"
    else:
        join = cond = carry = keep = ""
    cond += "ev.client_ts >= CAST(:lo AS timestamptz) AND ev.client_ts < CAST(:hi AS timestamptz)"
    if where:
        cond += f" AND ({where})"
    linked = (
        "AND {alias}.client_ts >= CAST(:lo AS timestamptz) - {w} "
        "AND {alias}.client_ts < CAST(:hi AS timestamptz) + {w} "
        "AND {alias}.client_ts BETWEEN a.ts - {w} AND a.ts + {w}"
    )
    checks = {
        name: expr
        for t in CHECKPOINTS
        for name, expr in (
            (f"reached_{t}", f"(a.checkpoint_s = {t})::int"),
            (f"persisted_{t}", f"(a.checkpoint_s = {t} AND a.kept)::int"),
            (f"reached_chars_{t}", f"CASE WHEN a.checkpoint_s = {t} THEN x.chars ELSE 0 END"),
            (
                f"persisted_chars_{t}",
                f"CASE WHEN a.checkpoint_s = {t} AND a.kept THEN x.chars ELSE 0 END",
            ),
        )
    }
    return f"""
acc AS (
    SELECT ev.event_id, ev.client_ts AS ts, ev.user_id, ev.language, ev.suggestion_id,
           ev.accepted_chars{carry}
    FROM suggestion_outcome ev {join}
    WHERE ev.outcome IN {ACCEPTED_OUTCOMES} AND {cond}
),
acc_x AS (
    SELECT a.event_id, a.ts, bool_or(s.display_ms >= {SHOWN_MIN_DISPLAY_MS}) AS seen,
           max(s.chars) AS chars
    FROM (SELECT DISTINCT event_id, ts, user_id, suggestion_id FROM acc) a
    JOIN suggestion_shown s ON s.user_id = a.user_id AND s.suggestion_id = a.suggestion_id
        {linked.format(alias="s", w=LINK_WINDOW)}
    GROUP BY a.event_id, a.ts
),
chk AS (
    SELECT ev.event_id, ev.client_ts AS ts, ev.user_id, ev.language, ev.suggestion_id,
           ev.checkpoint_s, (ev.status = 'present'
               AND ev.edit_distance_ratio < {PERSISTED_MAX_EDIT_RATIO}) AS kept{carry}
    FROM persistence_check ev {join}
    WHERE {cond}
),
chk_x AS (
    SELECT a.event_id, a.ts, max(o.accepted_chars) AS chars
    FROM (SELECT DISTINCT event_id, ts, user_id, suggestion_id FROM chk) a
    JOIN suggestion_outcome o ON o.user_id = a.user_id AND o.suggestion_id = a.suggestion_id
        AND o.outcome IN {ACCEPTED_OUTCOMES} {linked.format(alias="o", w=LINK_WINDOW)}
    GROUP BY a.event_id, a.ts
),
srv AS (
    SELECT ev.user_id, ev.language, ev.client_ts AS ts, ev.latency_ms,
           (ev.error IS NOT NULL)::int AS error_n,
           {_latency_bucket("ev.latency_ms")} AS bucket{carry}
    FROM completion_served ev {join}
    WHERE {cond}
),
contrib AS (
    SELECT ev.user_id, ev.language, ev.client_ts AS ts{carry},
           {_select({"shown_n": "1", "shown_chars": "ev.chars"})}
    FROM suggestion_shown ev {join}
    WHERE ev.display_ms >= {SHOWN_MIN_DISPLAY_MS} AND {cond}
    UNION ALL
    SELECT a.user_id, a.language, a.ts{keep},
           {
        _select(
            {
                "shown_n": "CASE WHEN x.seen THEN 0 ELSE 1 END",
                "shown_chars": (
                    "CASE WHEN x.seen THEN 0 ELSE coalesce(x.chars, a.accepted_chars) END"
                ),
                "accepted_n": "1",
                "accepted_chars": "a.accepted_chars",
            }
        )
    }
    FROM acc a LEFT JOIN acc_x x ON x.event_id = a.event_id AND x.ts = a.ts
    UNION ALL
    SELECT a.user_id, a.language, a.ts{keep}, {_select(checks)}
    FROM chk a JOIN chk_x x ON x.event_id = a.event_id AND x.ts = a.ts
    UNION ALL
    SELECT ev.user_id, ev.language, ev.client_ts AS ts{carry},
           {_select({"typed_chars": "ev.chars_typed_manual", "ai_chars": "ev.chars_accepted_ai"})}
    FROM typing_volume ev {join}
    WHERE {cond}
    UNION ALL
    SELECT a.user_id, a.language, a.ts{keep},
           {
        _select(
            {
                "served_n": "1",
                "error_n": "a.error_n",
                "latency_sum": "a.latency_ms",
            }
        )
    }
    FROM srv a
)"""


def component_sums(prefix: str = "") -> str:
    """``sum(c)::int AS c`` for every component (``latency_sum`` stays a double)."""
    return ", ".join(
        f"sum({prefix}{name}){'' if name == 'latency_sum' else '::int'} AS {name}"
        for name in COMPONENTS
    )


def bucket_value(bucket: int) -> float:
    """The value reported for a latency bucket: its geometric middle (half of bucket 0)."""
    if bucket == 0:
        return LATENCY_BUCKET_BASE / 2
    return float(LATENCY_BUCKET_BASE ** (bucket + 0.5))


def histogram_percentile(counts: Mapping[int, int], q: float) -> float:
    """The nearest-rank ``q`` quantile of a bucketed latency histogram."""
    total = sum(counts.values())
    # The tolerance keeps 0.95 * 100 at rank 95 whatever the float rounding.
    rank = max(1, math.ceil(q * total - 1e-9))
    seen = 0
    for bucket in sorted(counts):
        seen += counts[bucket]
        if seen >= rank:
            return bucket_value(bucket)
    raise ValueError("empty histogram")


# Settings for the analysis and refresh statements, restored afterwards. Every join here is on
# user_id over many rows: with stale statistics (right after a bulk load) the planner guesses one
# row per CTE and picks nested loops that run for minutes. JIT compiling the ~250 aggregates costs
# more than it saves, and per-user aggregation wants memory rather than disk sorts.
_SETTINGS = {"enable_nestloop": "off", "jit": "off", "work_mem": "256MB"}


@contextlib.contextmanager
def analysis_settings(conn: sqlalchemy.Connection) -> Iterator[None]:
    """Planner settings for the block (transaction-local), then the caller's again."""
    previous = {
        name: conn.execute(text("SELECT current_setting(:n)"), {"n": name}).scalar_one()
        for name in _SETTINGS
    }
    for name, value in _SETTINGS.items():
        conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
    try:
        yield
    finally:
        for name, value in previous.items():
            conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
