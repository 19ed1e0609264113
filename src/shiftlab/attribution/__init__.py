"""Attribution: how much of a behaviour change comes from selection and how much from the
label shift, with inference over organisms and verdicts only where the data carry them.

Every analysis takes the design table (``tables/runs.parquet``) or pools and returns one
tidy polars frame with :data:`ESTIMATE_SCHEMA` (``analysis, behaviour, method, term,
estimate, se, ci_low, ci_high, p_value, p_adjusted, p_min, n, n_clusters``; columns that
do not apply are null), some with a few columns more. Estimation never imports plotting.
"""

from __future__ import annotations

from shiftlab._frames import accepts_pandas
from shiftlab.attribution import _decompose, _eta, _mediation, _regression, _signs, _tables
from shiftlab.attribution import _frame as _frames
from shiftlab.attribution import _verdict as _verdicts
from shiftlab.attribution._decompose import CONTRASTS, PARTS, decomposition_name
from shiftlab.attribution._frame import ADJUSTMENTS, ESTIMATE_SCHEMA, adjust_p_values, method_role
from shiftlab.attribution._inference import (
    MIN_ORGANISMS,
    SignFlip,
    sign_flip,
    smallest_p,
)
from shiftlab.attribution._signs import MOVED
from shiftlab.attribution._simulate import simulate_runs

# Every analysis takes pandas frames as well as polars ones (and returns polars).
decompose = accepts_pandas(_decompose.decompose)
eta_curve = accepts_pandas(_eta.eta_curve)
full_k_runs = accepts_pandas(_frames.full_k_runs)
headline_runs = accepts_pandas(_frames.headline_runs)
within = accepts_pandas(_frames.within)
mediation = accepts_pandas(_mediation.mediation)
fit_cluster_ols = accepts_pandas(_regression.fit_cluster_ols)
fit_fixed_effects = accepts_pandas(_regression.fit_fixed_effects)
fit_mixed = accepts_pandas(_regression.fit_mixed)
sign_tests = accepts_pandas(_signs.sign_tests)
k_scaling = accepts_pandas(_tables.k_scaling)
method_table = accepts_pandas(_tables.method_table)
moderator_table = accepts_pandas(_tables.moderator_table)
organism_mean = accepts_pandas(_tables.organism_mean)
attribute = accepts_pandas(_verdicts.attribute)

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
    "decomposition_name",
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
