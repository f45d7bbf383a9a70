"""Who is analysed: exposures as SQL, one row per user of an experiment.

Clients log an exposure per session, so a user has many exposure rows; SQL parameters
``:experiment`` and ``:hi`` (a timestamptz upper bound) select them.
"""

# One row per analysed user: the first exposure per (experiment, user) wins, whatever order
# duplicates arrive in (clients log an exposure per session), and a user exposed to more than one
# arm is left out (``metrics_sql`` counts them). Inlined where used (NOT MATERIALIZED), so the
# planner sees the table's statistics (as a CTE it hashes the big side of every join instead).
# The exclusion is a WHERE on the grouped rows, not a HAVING: the planner guesses 0.5 % of the
# groups pass "HAVING count(DISTINCT arm) = 1" (491 users of 98,229 at 10M events, and then
# sorts every rollup row by user), but 99.5 % pass "arm IS NOT NULL".
# Every exposed user once, arm NULL for those exposed to more than one arm.
EXPOSURE_GROUPS = """
    SELECT user_id, CASE WHEN count(DISTINCT arm) = 1 THEN min(arm) END AS arm,
           min(client_ts) AS ts, (min(client_ts) AT TIME ZONE 'UTC')::date AS day
    FROM exposure WHERE experiment = :experiment AND client_ts < CAST(:hi AS timestamptz)
    GROUP BY user_id"""
EXPOSED = f"""
x AS NOT MATERIALIZED (
    SELECT user_id, arm, ts, day FROM ({EXPOSURE_GROUPS}
    ) exposed
    WHERE arm IS NOT NULL
)"""
# Every exposed user's first exposure with its context (language, IDE: attributes fixed before
# the variant could change anything) and how many arms the user was exposed to.
FIRST_EXPOSURES = """
fx AS (
    SELECT user_id, (array_agg(arm ORDER BY client_ts, event_id))[1] AS arm,
           min(client_ts) AS ts,
           (array_agg(language ORDER BY client_ts, event_id))[1] AS language,
           (array_agg(ide ORDER BY client_ts, event_id))[1] AS ide,
           count(DISTINCT arm) AS arms
    FROM exposure WHERE experiment = :experiment AND client_ts < CAST(:hi AS timestamptz)
    GROUP BY user_id
)"""
