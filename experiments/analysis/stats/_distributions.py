"""Typed wrappers over the scipy.special distribution functions the statistics need."""

from __future__ import annotations

# scipy ships no type stubs; this module is the one place that touches it untyped.
from scipy import special  # type: ignore[import-untyped]


def t_sf(x: float, dof: float) -> float:
    """P(T > x) for Student's t with ``dof`` degrees of freedom."""
    return float(special.stdtr(dof, -x))


def t_ppf(q: float, dof: float) -> float:
    """The q-quantile of Student's t with ``dof`` degrees of freedom."""
    return float(special.stdtrit(dof, q))


def norm_cdf(x: float) -> float:
    """P(Z ≤ x) for the standard normal."""
    return float(special.ndtr(x))


def chi2_sf(x: float, dof: float) -> float:
    """P(X > x) for χ² with ``dof`` degrees of freedom."""
    return float(special.chdtrc(dof, x))
