"""The tidy estimate frame every analysis returns, input checks, and p-value adjustment."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from shiftlab._frames import require_columns
from shiftlab.errors import ShiftlabError
from shiftlab.spec import METHOD_FACTS

ESTIMATE_SCHEMA: dict[str, Any] = {
    "analysis": pl.String,
    "behaviour": pl.String,
    "method": pl.String,
    "term": pl.String,
    "estimate": pl.Float64,
    "se": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "p_value": pl.Float64,
    "p_adjusted": pl.Float64,
    "p_min": pl.Float64,
    "n": pl.Int64,
    "n_clusters": pl.Int64,
}
ADJUSTMENTS = ("holm", "bh")


def estimates(rows: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows as the estimate frame: every schema column, absent ones null."""
    return pl.DataFrame(
        [{column: row.get(column) for column in ESTIMATE_SCHEMA} for row in rows],
        schema=ESTIMATE_SCHEMA,
    )


def adjust_p_values(p_values: Sequence[float | None], method: str = "holm") -> list[float | None]:
    """Holm (family-wise error) or Benjamini-Hochberg (false discovery rate) adjusted
    p-values; None entries stay None and do not count towards the family.

    >>> adjust_p_values([0.01, 0.04, None, 0.03], "holm")
    [0.03, 0.06, None, 0.06]
    """
    from statsmodels.stats.multitest import multipletests

    if method not in ADJUSTMENTS:
        raise ShiftlabError(f"adjustment: expected one of {ADJUSTMENTS}, got {method!r}")
    present = [i for i, p in enumerate(p_values) if p is not None and not np.isnan(p)]
    out: list[float | None] = [None] * len(p_values)
    if present:
        raw = np.array([p_values[i] for i in present], dtype=float)
        # statsmodels' Holm branch runs a full gc.collect() on every call (0.3 s in a process
        # that holds torch, several times a report); the step-down is computed here instead,
        # as statsmodels computes it (tested against it).
        adjusted = _holm(raw) if method == "holm" else multipletests(raw, method="fdr_bh")[1]
        for i, value in zip(present, adjusted, strict=True):
            out[i] = round(float(value), 15)
    return out


def _holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values: the i-th smallest (from 0) of n is multiplied by
    n - i, made non-decreasing in that order and capped at 1. Tied p-values get the same
    adjusted value whatever order the sort leaves them in."""
    order = np.argsort(p_values)
    steps = np.arange(len(p_values), 0, -1)
    adjusted = np.empty_like(p_values)
    adjusted[order] = np.minimum(np.maximum.accumulate(p_values[order] * steps), 1.0)
    return adjusted


def with_adjusted(frame: pl.DataFrame, method: str = "holm") -> pl.DataFrame:
    """``frame`` with ``p_adjusted`` filled across each (analysis) family."""
    parts = []
    for _, part in frame.group_by("analysis", maintain_order=True):
        adjusted = adjust_p_values(part["p_value"].to_list(), method)
        parts.append(part.with_columns(pl.Series("p_adjusted", adjusted, dtype=pl.Float64)))
    return pl.concat(parts) if parts else frame


def full_k_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """Design-table rows at each method's full candidate count (k-scaling rows below it
    left out), ``none`` rows included.

    >>> runs = pl.DataFrame({"method": "m", "arm": ["full", "full", "none"], "k": [1, 4, None],
    ...                      "delta": [0.1, 0.2, 0.0]})
    >>> full_k_runs(runs)["delta"].to_list()
    [0.2, 0.0]
    """
    require_columns(runs, ["method", "arm", "k", "delta"], "the design table")
    full_k = pl.col("k").is_null() | (pl.col("k") == pl.col("k").max().over("method"))
    return runs.filter(full_k)


def headline_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """Design-table rows with a run, leaving out k-scaling rows below a method's full
    candidate count (what the paper's tables report)."""
    return full_k_runs(runs).filter(pl.col("arm") != "none")


def method_role(method: str) -> str:
    """``paired_loss`` (BCT, ACT), ``control`` (greedy self-training, rejection sampling)
    or ``consistency_training`` (the label methods the study is about).

    >>> method_role("self_confidence"), method_role("bct"), method_role("rejection_sampling")
    ('consistency_training', 'paired_loss', 'control')
    """
    facts = METHOD_FACTS.get(method)
    return facts.role if facts is not None else "consistency_training"


def within(frame: pl.DataFrame, low: float = -1.0, high: float = 1.0) -> pl.DataFrame:
    """``frame`` with its intervals clipped to the parameter's range [low, high] (a
    difference of rates lies in [-1, 1]); a clipped bound never excludes a possible value.

    >>> clipped = within(estimates([{"estimate": 0.5, "ci_low": -1.4, "ci_high": 1.2}]))
    >>> clipped.select("ci_low", "ci_high").row(0)
    (-1.0, 1.0)
    """
    return frame.with_columns(pl.col("ci_low").clip(low, high), pl.col("ci_high").clip(low, high))
