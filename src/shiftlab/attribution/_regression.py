"""Regressions of behaviour change: OLS with cluster-robust errors, organism fixed effects,
and a mixed model with a random intercept per base model."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import polars as pl

from shiftlab.attribution._frame import estimates, require_columns
from shiftlab.errors import ShiftlabError


def _design(frame: pl.DataFrame, formula: str, cluster: str | None) -> tuple[Any, Any, Any]:
    """(y, X, cluster codes) with every row that misses a used value dropped once."""
    import patsy

    if cluster is not None:
        require_columns(frame, [cluster], "the cluster")
        frame = frame.filter(pl.col(cluster).is_not_null())
    data = frame.to_pandas()
    try:
        y, x = patsy.dmatrices(formula, data, NA_action="drop", return_type="dataframe")
    except patsy.PatsyError as error:
        raise ShiftlabError(f"formula {formula!r}: {str(error).splitlines()[0]}") from None
    codes = None
    if cluster is not None:
        codes = data.loc[y.index, cluster].astype("category").cat.codes.to_numpy()
        if len(np.unique(codes)) < 2:
            raise ShiftlabError(
                f"cluster-robust errors need at least 2 clusters; {cluster!r} has "
                f"{len(np.unique(codes))} among the {len(y)} complete rows"
            )
    return y, x, codes


def _coefficients(result: Any, analysis: str, n: int, clusters: int | None) -> list[dict]:
    interval = result.conf_int(0.05)
    return [
        {
            "analysis": analysis,
            "term": term,
            "estimate": float(result.params[term]),
            "se": float(result.bse[term]),
            "ci_low": float(interval.loc[term, 0]),
            "ci_high": float(interval.loc[term, 1]),
            "p_value": float(result.pvalues[term]),
            "n": n,
            "n_clusters": clusters,
        }
        for term in result.params.index
    ]


def _fit_ols(frame: pl.DataFrame, formula: str, cluster: str, analysis: str) -> pl.DataFrame:
    import statsmodels.api as sm

    y, x, codes = _design(frame, formula, cluster)
    if x.shape[0] <= x.shape[1]:
        raise ShiftlabError(
            f"formula {formula!r}: {x.shape[0]} complete rows for {x.shape[1]} coefficients"
        )
    n_clusters = len(np.unique(codes))
    with warnings.catch_warnings():
        # A coefficient the clusters cannot identify gets a NaN error; see _identified.
        warnings.simplefilter("ignore", RuntimeWarning)
        result = sm.OLS(y, x).fit(cov_type="cluster", cov_kwds={"groups": codes}, use_t=True)
        return estimates(_coefficients(result, analysis, len(y), n_clusters))


def _identified(fit: pl.DataFrame, cluster: str) -> pl.DataFrame:
    bad = fit.filter(~pl.col("se").is_finite())["term"].to_list()
    if bad:
        raise ShiftlabError(
            f"{len(bad)} coefficient(s) have no cluster-robust error with "
            f"{fit['n_clusters'][0]} {cluster} clusters (e.g. {bad[0]}); fit fewer terms "
            "or add clusters"
        )
    return fit


def fit_cluster_ols(
    frame: pl.DataFrame, formula: str, cluster: str = "organism_id", *, analysis: str = "ols"
) -> pl.DataFrame:
    """OLS of a patsy ``formula`` with CR1 cluster-robust errors by ``cluster``.

    Rows missing any value the formula uses (or the cluster) are dropped once, before
    the fit, so the clusters always align with the rows fitted. Inference uses a t
    distribution with G - 1 degrees of freedom (G clusters), as CRV1 in pyfixest does.

    >>> from shiftlab.attribution import simulate_runs
    >>> runs = simulate_runs(selection_effect=-0.2, seed=0)
    >>> pair = runs.filter(pl.col("arm").is_in(["full", "shuffled"]))
    >>> fit = fit_cluster_ols(pair, "delta ~ C(arm)")
    >>> round(fit.filter(term="C(arm)[T.shuffled]")["estimate"].item(), 1)
    0.2
    """
    return _identified(_fit_ols(frame, formula, cluster, analysis), cluster)


def fit_fixed_effects(
    frame: pl.DataFrame, formula: str, fixed: str = "organism_id", cluster: str = "organism_id"
) -> pl.DataFrame:
    """``formula`` plus a fixed effect per ``fixed`` level, CR1 errors by ``cluster``; the
    fixed-effect coefficients themselves are left out of the frame."""
    fit = _fit_ols(frame, f"{formula} + C({fixed})", cluster, "fixed_effects")
    return _identified(fit.filter(~pl.col("term").str.starts_with(f"C({fixed})")), cluster)


def fit_mixed(
    frame: pl.DataFrame, formula: str, group: str = "base_model", cluster: str = "organism_id"
) -> pl.DataFrame:
    """A linear mixed model with a random intercept per ``group`` (statsmodels MixedLM).

    If the fit fails or does not converge (common with few groups), a warning says so
    and the OLS answer with CR1 errors by ``cluster`` is returned instead, marked
    ``analysis = "mixed_fallback_ols"``.
    """
    import statsmodels.formula.api as smf
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    require_columns(frame, [group], "the mixed model's group")
    kept = frame.filter(pl.col(group).is_not_null())
    y, _, _ = _design(kept, formula, None)
    data = kept.to_pandas().loc[y.index]
    n_groups = data[group].nunique()
    problem = None
    if n_groups < 2:
        problem = f"{group!r} has {n_groups} level(s); a random intercept needs 2 or more"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            try:
                result = smf.mixedlm(formula, data, groups=data[group]).fit(reml=True)
                if not result.converged:
                    problem = "the optimiser did not converge"
            except (ConvergenceWarning, np.linalg.LinAlgError, ValueError) as error:
                problem = str(error).splitlines()[0]
    if problem is not None:
        warnings.warn(f"mixed model: {problem}; reporting OLS with cluster-robust errors",
                      stacklevel=2)  # fmt: skip
        return fit_cluster_ols(frame, formula, cluster, analysis="mixed_fallback_ols")
    rows = _coefficients(result, "mixed", len(data), n_groups)
    return estimates([r for r in rows if r["term"] != "Group Var"])
