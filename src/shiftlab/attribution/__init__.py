"""Attribution: how much of a behaviour change comes from selection and how much from the
labelling shift, with honest uncertainty.

Every analysis takes the design table (``tables/runs.parquet``) or pools and returns one
tidy polars frame with :data:`ESTIMATE_SCHEMA` (``analysis, behaviour, method, term,
estimate, se, ci_low, ci_high, p_value, p_adjusted, n, n_clusters``; columns that do not
apply are null). Estimation never imports plotting.
"""

from __future__ import annotations

from shiftlab.attribution._decompose import CONTRASTS, decompose, mediation
from shiftlab.attribution._eta import eta_curve
from shiftlab.attribution._frame import (
    ADJUSTMENTS,
    ESTIMATE_SCHEMA,
    adjust_p_values,
    headline_runs,
)
from shiftlab.attribution._regression import fit_cluster_ols, fit_fixed_effects, fit_mixed
from shiftlab.attribution._signs import sign_tests
from shiftlab.attribution._simulate import simulate_runs
from shiftlab.attribution._tables import clustered_mean, k_scaling, method_table, moderator_table

__all__ = [
    "ADJUSTMENTS",
    "CONTRASTS",
    "ESTIMATE_SCHEMA",
    "adjust_p_values",
    "clustered_mean",
    "decompose",
    "eta_curve",
    "fit_cluster_ols",
    "fit_fixed_effects",
    "fit_mixed",
    "headline_runs",
    "k_scaling",
    "mediation",
    "method_table",
    "moderator_table",
    "sign_tests",
    "simulate_runs",
]
