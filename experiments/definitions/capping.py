"""Capping (winsorization) of each user's contribution to a metric, as people configure it.

Heavy users dominate sums over users: one developer with 40 times the median activity carries a
ratio metric's numerator and denominator alike, and the per-user variance, the delta method and
CUPED's θ rest on a handful of people. Capping limits what any one user contributes:

- a **mean** metric (the user's value m): m is capped at the cap;
- a **ratio** metric (Σm / Σd): the user's denominator d is capped at the cap and their
  numerator scaled by the same factor, so their weight is capped while their own rate is kept
  (capping m and d separately would bias every heavy user's rate towards cap_m / cap_d).

The cap is either a ``percentile`` of the users' values (computed from the data, on the pooled
arms, per row of the analysis: overall and per language; users with a zero value are left out
of the percentile) or an ``absolute`` value. The pre-period covariate of CUPED gets its own
percentile of the pre-period values.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Capping(BaseModel):
    """One metric's cap: a percentile of the users' values or an absolute value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    percentile: Annotated[float, Field(gt=0.5, le=1.0, allow_inf_nan=False)] | None = None
    absolute: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Capping:
        if (self.percentile is None) == (self.absolute is None):
            raise ValueError("give exactly one of percentile (e.g. 0.99) or absolute")
        return self

    def describe(self) -> str:
        """ "p99" or "≤ 500", for tables and reports."""
        if self.percentile is not None:
            return f"p{self.percentile * 100:g}"
        return f"≤ {self.absolute:g}"


# The default for count-like metrics: each user's contribution capped at the 95th percentile
# (p99 left acceptance and % of code written at 6 % false positives at 100 users per arm in the
# A/A simulations of bench/stats_calibration.py; p95 keeps them within 4-6 %).
DEFAULT_CAPPING = Capping(percentile=0.95)
