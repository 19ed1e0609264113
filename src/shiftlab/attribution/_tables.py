"""The paper's descriptive tables: mean Δ and sign consistency per method, moderators,
and k-scaling, each with organism-clustered uncertainty."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import polars as pl

from shiftlab.attribution._frame import estimates, headline_runs, require_columns, with_adjusted
from shiftlab.attribution._regression import fit_cluster_ols
from shiftlab.attribution._signs import sign_row
from shiftlab.errors import ShiftlabError


def clustered_mean(values: Any, clusters: Any) -> dict[str, Any]:
    """The mean of ``values`` with a CR1 cluster-robust standard error, a t(G - 1) 95%
    interval and the two-sided p-value of a zero mean (null without two clusters).

    >>> row = clustered_mean([1.0, 2.0, 3.0, 4.0], ["a", "a", "b", "b"])
    >>> row["estimate"], row["n"], row["n_clusters"], round(row["se"], 3)
    (2.5, 4, 2, 1.0)
    """
    from scipy import stats

    frame = pl.DataFrame({"value": values, "cluster": clusters}, strict=False).drop_nulls()
    n, groups = frame.height, frame["cluster"].n_unique()
    row: dict[str, Any] = {"n": n, "n_clusters": groups}
    if not n:
        return row
    mean = float(frame["value"].mean())  # type: ignore[arg-type]
    row["estimate"] = mean
    if groups < 2:
        return row
    sums = frame.group_by("cluster").agg((pl.col("value") - mean).sum())["value"].to_numpy()
    se = math.sqrt(groups / (groups - 1) * float(np.sum(sums**2))) / n
    quantile = float(stats.t.ppf(0.975, groups - 1))
    row |= {"se": se, "ci_low": mean - quantile * se, "ci_high": mean + quantile * se}
    if se > 0:
        row["p_value"] = float(2 * stats.t.sf(abs(mean) / se, groups - 1))
    return row


def method_table(runs: pl.DataFrame, *, arm: str = "full", adjust: str = "holm") -> pl.DataFrame:
    """Per behaviour x method, on the ``arm`` runs: ``mean_delta`` (organism-clustered
    interval, t-test of zero) and the sign consistency ``share_down``, the share of moved
    runs in which the behaviour went down (exact interval and the two-sided sign test, as
    in :func:`sign_tests`; 1 and 0 are both consistent, in opposite directions).

    >>> from shiftlab.attribution import simulate_runs
    >>> table = method_table(simulate_runs(selection_effect=-0.2, seed=1))
    >>> sorted(set(table["term"]))
    ['mean_delta', 'share_down']
    """
    require_columns(runs, ["behaviour", "method", "arm", "k", "delta", "organism_id"],
                    "method_table")  # fmt: skip
    chosen = headline_runs(runs).filter(pl.col("arm") == arm, pl.col("delta").is_not_null())
    if chosen.is_empty():
        raise ShiftlabError(f"method_table: no runs of arm {arm!r} with a delta")
    rows = []
    groups = chosen.sort("behaviour", "method").group_by("behaviour", "method", maintain_order=True)
    for (behaviour, method), part in groups:
        key = {"behaviour": behaviour, "method": method}
        mean = clustered_mean(part["delta"], part["organism_id"])
        rows.append({"analysis": "method_mean_delta", "term": "mean_delta", **key, **mean})
        rows.append(sign_row("method_share_down", str(behaviour), str(method), part))
    return with_adjusted(estimates(rows), adjust)


def moderator_table(
    runs: pl.DataFrame, moderators: pl.DataFrame, *, arm: str = "full"
) -> pl.DataFrame:
    """Mean Δ of the ``arm`` runs by each moderator's level, per behaviour, and the
    moderator's slope where it varies (``delta ~ moderator``, CR1 errors by organism).

    ``moderators`` has one row per ``base_model`` and one column per moderator (a bool
    such as ``instruct``, a number such as ``log10_params``, or a category). Moderators
    vary between base models, so the slope's errors are clustered by base model (CR1,
    t(G - 1)): with a handful of base models its interval is, rightly, wide.

    >>> from shiftlab.attribution import simulate_runs
    >>> runs = simulate_runs(selection_effect=-0.2, seed=1)
    >>> facts = pl.DataFrame({"base_model": runs["base_model"].unique().sort()})
    >>> facts = facts.with_columns(instruct=pl.int_range(pl.len()) % 2 == 0)
    >>> table = moderator_table(runs, facts)
    >>> sorted(set(table["term"]))[:3]
    ['instruct', 'instruct=false', 'instruct=true']
    """
    require_columns(runs, ["behaviour", "base_model", "arm", "delta", "organism_id"],
                    "moderator_table")  # fmt: skip
    require_columns(moderators, ["base_model"], "moderator_table's moderators")
    names = [c for c in moderators.columns if c != "base_model"]
    if not names:
        raise ShiftlabError("moderator_table: the moderators frame has no moderator column")
    missing = set(runs["base_model"]) - set(moderators["base_model"])
    if missing:
        raise ShiftlabError(f"moderator_table: no moderators for base model(s) {sorted(missing)}")
    chosen = (
        headline_runs(runs)
        .filter(pl.col("arm") == arm, pl.col("delta").is_not_null())
        .join(moderators, on="base_model", how="left")
    )
    rows = []
    for (behaviour,), part in chosen.sort("behaviour").group_by("behaviour", maintain_order=True):
        for name in names:
            levels = part.drop_nulls(name).sort(name).group_by(name, maintain_order=True)
            for (level,), group in levels:
                shown = (
                    str(level).lower()
                    if isinstance(level, bool)
                    else f"{level:g}"
                    if isinstance(level, int | float)
                    else str(level)
                )
                rows.append({"analysis": "moderator", "behaviour": behaviour,
                             "term": f"{name}={shown}",
                             **clustered_mean(group["delta"], group["organism_id"])})  # fmt: skip
            if part[name].drop_nulls().n_unique() > 1:
                rows += _slope(part, name, str(behaviour))
    return with_adjusted(estimates(rows))


def _slope(part: pl.DataFrame, name: str, behaviour: str) -> list[dict[str, Any]]:
    """The moderator's coefficient (clustered by base model): a slope for numbers and
    booleans, a contrast with the first level for categories."""
    if part.schema[name] in (pl.String, pl.Categorical):
        data, term = part, f"C({name})"
    else:
        data, term = part.with_columns(pl.col(name).cast(pl.Float64)), name
    try:
        fit = fit_cluster_ols(data, f"delta ~ {term}", "base_model", analysis="moderator_slope")
    except ShiftlabError as error:
        warnings.warn(f"moderator {name} ({behaviour}): no slope: {error}", stacklevel=3)
        return []
    rows = fit.filter(pl.col("term").str.starts_with(term)).iter_rows(named=True)
    return [{**row, "behaviour": behaviour} for row in rows]


def k_scaling(runs: pl.DataFrame) -> pl.DataFrame:
    """Mean Δ of the ``full`` arm by candidate count k, per behaviour x method, with
    organism-clustered 95% intervals: ``behaviour, method, k, mean_delta, se, ci_low,
    ci_high, n, n_clusters``.

    >>> runs = pl.DataFrame({"behaviour": "sycophancy", "method": "self_confidence",
    ...     "arm": "full", "k": [1, 1, 4, 4], "delta": [-0.1, -0.2, -0.3, -0.4],
    ...     "organism_id": ["a", "b", "a", "b"]})
    >>> k_scaling(runs).select("k", pl.col("mean_delta").round(3)).rows()
    [(1, -0.15), (4, -0.35)]
    """
    require_columns(runs, ["behaviour", "method", "arm", "k", "delta", "organism_id"],
                    "k_scaling")  # fmt: skip
    chosen = runs.filter(
        pl.col("arm") == "full", pl.col("k").is_not_null(), pl.col("delta").is_not_null()
    )
    if chosen.is_empty():
        raise ShiftlabError("k_scaling: no full-arm runs with a candidate count k")
    rows = []
    for (behaviour, method, k), part in chosen.sort("behaviour", "method", "k").group_by(
        "behaviour", "method", "k", maintain_order=True
    ):
        mean = clustered_mean(part["delta"], part["organism_id"])
        rows.append({"behaviour": behaviour, "method": method, "k": k,
                     "mean_delta": mean.get("estimate"),
                     **{c: mean.get(c) for c in ("se", "ci_low", "ci_high", "n",
                                                 "n_clusters")}})  # fmt: skip
    return pl.DataFrame(
        rows,
        schema={"behaviour": pl.String, "method": pl.String, "k": pl.Int64,
                "mean_delta": pl.Float64, "se": pl.Float64, "ci_low": pl.Float64,
                "ci_high": pl.Float64, "n": pl.Int64, "n_clusters": pl.Int64},
    )  # fmt: skip
