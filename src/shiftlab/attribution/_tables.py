"""The paper's descriptive tables: mean Δ and sign consistency per method, moderators,
and k-scaling, each with inference over organisms."""

from __future__ import annotations

import warnings
from typing import Any

import polars as pl

from shiftlab.attribution._frame import (
    estimates,
    headline_runs,
    method_role,
    require_columns,
    with_adjusted,
)
from shiftlab.attribution._inference import sign_flip
from shiftlab.attribution._regression import fit_cluster_ols
from shiftlab.attribution._signs import SIGN_SCHEMA, organism_deltas, sign_row
from shiftlab.errors import ShiftlabError


def organism_mean(runs: pl.DataFrame, *, seed: int = 0) -> dict[str, Any]:
    """The mean over organisms of each organism's mean ``delta`` in ``runs``, with the
    sign-flip p-value of a zero mean and its inverted 95% interval inside [-1, 1]
    (``n`` counts runs, ``n_clusters`` organisms; only counts without a delta).

    >>> runs = pl.DataFrame({"delta": [-0.1, -0.3, -0.2, -0.2], "organism_id": list("aabb")})
    >>> row = organism_mean(runs)
    >>> round(row["estimate"], 3), row["n"], row["n_clusters"], row["p_value"], row["se"]
    (-0.2, 4, 2, 0.5, 0.0)
    """
    kept = runs.drop_nulls("delta")
    deltas = organism_deltas(kept)["delta"].to_numpy()
    if not len(deltas):
        return {"n": 0, "n_clusters": 0}
    return sign_flip(deltas, seed=seed).as_row() | {"n": kept.height}


def method_table(runs: pl.DataFrame, *, arm: str = "full", adjust: str = "holm") -> pl.DataFrame:
    """Per behaviour x method, on the ``arm`` runs: ``mean_delta`` (the mean over
    organisms, sign-flip p and interval) and the sign consistency ``share_down``, the
    share of moved organisms in which the behaviour went down (exact interval and sign
    test, as in :func:`sign_tests`; 1 and 0 are both consistent, in opposite
    directions). Controls and paired-loss methods are rows of their own (``role``). Every
    behaviour x method with ``arm`` runs has its rows: one none of whose runs has a delta
    keeps null estimates and says why in ``note``.

    >>> from shiftlab.attribution import simulate_runs
    >>> table = method_table(simulate_runs(selection_effect=-0.2, seed=1))
    >>> sorted(set(table["term"])), table["n_clusters"].unique().to_list()
    (['mean_delta', 'share_down'], [27])
    """
    require_columns(runs, ["behaviour", "method", "arm", "k", "delta", "organism_id"],
                    "method_table")  # fmt: skip
    chosen = headline_runs(runs).filter(pl.col("arm") == arm)
    if chosen["delta"].is_null().all():
        raise ShiftlabError(f"method_table: no runs of arm {arm!r} with a delta")
    rows = []
    groups = chosen.sort("behaviour", "method").group_by("behaviour", "method", maintain_order=True)
    for (behaviour, method), every in groups:
        key = {"behaviour": behaviour, "method": method, "role": method_role(str(method))}
        part = every.drop_nulls("delta")
        if part.is_empty():
            # Every pair stays in the table: one whose runs have no delta says why.
            note = (f"no delta: none of its {every.height} {arm} runs had an eval output "
                    "that could be judged, before and after")  # fmt: skip
            rows += [{"analysis": a, "term": t, **key, "n": every.height, "note": note}
                     for a, t in (("method_mean_delta", "mean_delta"),
                                  ("method_share_down", "share_down"))]  # fmt: skip
            continue
        rows.append({"analysis": "method_mean_delta", "term": "mean_delta", **key,
                     **organism_mean(part)})  # fmt: skip
        rows.append(sign_row("method_share_down", str(behaviour), str(method), part))
    frame = pl.DataFrame([{c: r.get(c) for c in SIGN_SCHEMA} for r in rows], schema=SIGN_SCHEMA)
    return with_adjusted(frame, adjust)


def moderator_table(
    runs: pl.DataFrame, moderators: pl.DataFrame, *, arm: str = "full"
) -> pl.DataFrame:
    """Mean Δ of the ``arm`` runs by each moderator's level, per behaviour (the mean over
    the level's organisms, sign-flip p and interval), and the moderator's slope where it
    varies (``delta ~ moderator``).

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
                             "term": f"{name}={shown}", **organism_mean(group)})  # fmt: skip
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


K_SCALING_SCHEMA = {
    "behaviour": pl.String, "method": pl.String, "k": pl.Int64, "has_selection": pl.Boolean,
    "mean_delta": pl.Float64, "se": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
    "p_value": pl.Float64, "p_min": pl.Float64, "n": pl.Int64, "n_clusters": pl.Int64,
}  # fmt: skip


def k_scaling(runs: pl.DataFrame) -> pl.DataFrame:
    """Mean Δ of the ``full`` arm by candidate count k, per behaviour x method, as a mean
    over organisms with its sign-flip p-value and 95% interval: ``behaviour, method, k,
    has_selection, mean_delta, se, ci_low, ci_high, p_value, p_min, n, n_clusters``.
    At k = 1 there is nothing to select among (``has_selection`` false).

    >>> runs = pl.DataFrame({"behaviour": "sycophancy", "method": "self_confidence",
    ...     "arm": "full", "k": [1, 1, 4, 4], "delta": [-0.1, -0.2, -0.3, -0.4],
    ...     "organism_id": ["a", "b", "a", "b"]})
    >>> k_scaling(runs).select("k", "has_selection", pl.col("mean_delta").round(3)).rows()
    [(1, False, -0.15), (4, True, -0.35)]
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
        mean = organism_mean(part)
        rows.append({"behaviour": behaviour, "method": method, "k": k, "has_selection": k > 1,
                     "mean_delta": mean.get("estimate"), **mean})  # fmt: skip
    return pl.DataFrame([{c: r.get(c) for c in K_SCALING_SCHEMA} for r in rows],
                        schema=K_SCALING_SCHEMA)  # fmt: skip
