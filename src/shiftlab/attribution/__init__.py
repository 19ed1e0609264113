"""Attribution: how much of a behaviour change comes from selection and how much from the
label shift, with inference over organisms and verdicts only where the data carry them.

Every analysis takes the design table (``tables/runs.parquet``) or pools and returns one
tidy polars frame with :data:`ESTIMATE_SCHEMA` (``analysis, behaviour, method, term,
estimate, se, ci_low, ci_high, p_value, p_adjusted, p_min, n, n_clusters``; columns that
do not apply are null), some with a few columns more. Estimation never imports plotting.
"""

from __future__ import annotations

from shiftlab.attribution._decompose import CONTRASTS, PARTS, decompose
from shiftlab.attribution._eta import eta_curve
from shiftlab.attribution._frame import (
    ADJUSTMENTS,
    ESTIMATE_SCHEMA,
    adjust_p_values,
    full_k_runs,
    headline_runs,
    method_role,
    within,
)
from shiftlab.attribution._inference import (
    MIN_ORGANISMS,
    SignFlip,
    sign_flip,
    smallest_p,
)
from shiftlab.attribution._mediation import mediation
from shiftlab.attribution._regression import fit_cluster_ols, fit_fixed_effects, fit_mixed
from shiftlab.attribution._signs import MOVED, sign_tests
from shiftlab.attribution._simulate import simulate_runs
from shiftlab.attribution._tables import k_scaling, method_table, moderator_table, organism_mean
from shiftlab.attribution._verdict import attribute

__all__ = [
    "ADJUSTMENTS",
    "CONTRASTS",
    "ESTIMATE_SCHEMA",
    "MIN_ORGANISMS",
    "MOVED",
    "PARTS",
    "SignFlip",
    "adjust_p_values",
    "attribute",
    "decompose",
    "eta_curve",
    "fit_cluster_ols",
    "fit_fixed_effects",
    "fit_mixed",
    "full_k_runs",
    "headline_runs",
    "k_scaling",
    "mediation",
    "method_role",
    "method_table",
    "moderator_table",
    "organism_mean",
    "sign_flip",
    "sign_tests",
    "simulate_runs",
    "smallest_p",
    "within",
]
