"""Feedback tagging's options that the command line offers, with their defaults.

Standard library only, so ``codelift feedback --help`` need not load the ORM, numpy or the
sentence model; the modules that do the work (``feedback.worker``, ``feedback.evaluation``,
``feedback.models``) use these definitions.
"""

from __future__ import annotations

# Polarities a theme may lean to.
LEANINGS = ("positive", "negative", "neutral")
# Folds of ``codelift feedback evaluate``'s cross-validation.
DEFAULT_FOLDS = 10
# Retrain once this many corrections arrived since the current tagger was trained.
DEFAULT_RETRAIN_AFTER = 20
# Folds of the cross-validation recorded with each tagger version.
RETRAIN_FOLDS = 5
