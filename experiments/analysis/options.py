"""The analysis's options that the command line offers, with their defaults.

Standard library only, so ``codelift analyze --help`` and ``codelift backtest --help`` need not
load numpy and scipy; the statistics (``experiments.analysis.stats``) use these definitions.
"""

from __future__ import annotations

import enum


class Correction(enum.StrEnum):
    """A multiple-comparison procedure."""

    HOLM = "holm"
    BH = "bh"


# The sequential test's tuning: GrowthBook's default, tightest around 5,000 users in total.
DEFAULT_N_STAR = 5000.0
# The bootstrap of offline evaluations (backtests): resamples and the CIs' error level.
DEFAULT_RESAMPLES = 2000
DEFAULT_ALPHA = 0.05
