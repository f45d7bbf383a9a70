"""The backtest's options that the command line offers, with their defaults.

Standard library only, so ``codelift backtest --help`` need not load the corpus, the gateway's
protocol or numpy; ``backtest.masking`` uses these definitions.
"""

from __future__ import annotations

# Characters of the file sent at most before and after the cursor.
DEFAULT_PREFIX_CHARS = 3000
DEFAULT_SUFFIX_CHARS = 1000
