"""Every table of every package, so Alembic (and schema tests) see the complete metadata.

The core's ``Base`` knows no feature; this is the one place that imports all of them.
"""

from __future__ import annotations

from sqlalchemy import MetaData

from core.db.base import Base


def load_all_models() -> MetaData:
    """Import every package that owns tables, so the metadata is complete (Alembic, tests)."""
    import backtest.models  # noqa: F401
    import collector.models  # noqa: F401
    import core.auth.models  # noqa: F401
    import experiments.analysis.gate_models  # noqa: F401
    import experiments.analysis.rollup_models  # noqa: F401
    import experiments.definitions.models  # noqa: F401
    import feedback.models  # noqa: F401

    return Base.metadata
