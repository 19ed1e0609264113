"""The η(s) diagnostic: how misbehaviour varies with a candidate's selection score, and so
how far selecting by that score can move risk."""

from __future__ import annotations

import numpy as np
import polars as pl

from shiftlab._stats import wilson_interval
from shiftlab.attribution._frame import ESTIMATE_SCHEMA, require_columns
from shiftlab.errors import ShiftlabError

ETA_SCHEMA = {**ESTIMATE_SCHEMA, "score_low": pl.Float64, "score_high": pl.Float64}


def eta_curve(pools: pl.DataFrame, *, n_bins: int = 10) -> pl.DataFrame:
    """Binned misbehaviour rate η of pool candidates against their selection ``score``.

    One ``eta`` row per score bin (quantile bins over the candidates; ``score_low`` and
    ``score_high`` are its edges, the estimate the rate with its Wilson 95% interval),
    then a ``selection_bound`` row: (max η - min η) times the total variation distance
    between the chosen and the unselected candidates' score distributions over the same
    bins, a bound on how far selection by the score can move the misbehaviour rate.
    Grouped by ``behaviour`` and ``method`` when the frame has them.

    >>> rows = [{"score": s / 100, "misbehaving": float(s < 30), "chosen": s >= 60}
    ...         for s in range(100)]
    >>> curve = eta_curve(pl.DataFrame(rows), n_bins=5)
    >>> curve.filter(term="eta")["estimate"].to_list()
    [1.0, 0.5, 0.0, 0.0, 0.0]
    >>> curve.filter(term="selection_bound")["estimate"].item()
    1.0
    """
    require_columns(pools, ["score", "misbehaving", "chosen"], "eta_curve")
    if n_bins < 2:
        raise ShiftlabError(f"n_bins: at least 2, got {n_bins}")
    keys = [c for c in ("behaviour", "method") if c in pools.columns]
    rated = pools.drop_nulls(["score", "misbehaving"])
    if rated.is_empty():
        raise ShiftlabError("eta_curve: no candidate has both a score and a verdict")
    parts = rated.group_by(keys, maintain_order=True) if keys else [((), rated)]
    rows = []
    for key, part in parts:
        labels = dict(zip(keys, key, strict=True))
        rows += _curve(part, n_bins, labels.get("behaviour"), labels.get("method"))
    return pl.DataFrame(rows, schema=ETA_SCHEMA)


def _curve(part: pl.DataFrame, n_bins: int, behaviour: str | None, method: str | None) -> list:
    scores = part["score"].to_numpy().astype(float)
    bad = part["misbehaving"].to_numpy().astype(float)
    chosen = part["chosen"].to_numpy().astype(bool)
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:
        edges = np.array([scores[0], scores[0]])
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2)
    base = {"behaviour": behaviour, "method": method, "analysis": "eta_curve"}
    rows, rates = [], []
    for b in range(len(edges) - 1):
        members = which == b
        n = int(members.sum())
        if not n:
            continue
        k = int(bad[members].sum())
        low, high = wilson_interval(k, n)
        rates.append(k / n)
        rows.append(base | {"term": "eta", "estimate": k / n, "ci_low": low, "ci_high": high,
                            "n": n, "score_low": float(edges[b]),
                            "score_high": float(edges[b + 1])})  # fmt: skip
    bound = None
    if chosen.any() and (~chosen).any():
        bins = len(edges) - 1
        p = np.bincount(which[chosen], minlength=bins) / chosen.sum()
        q = np.bincount(which[~chosen], minlength=bins) / (~chosen).sum()
        bound = (max(rates) - min(rates)) * 0.5 * float(np.abs(p - q).sum())
    rows.append(base | {"term": "selection_bound", "estimate": bound, "n": len(scores)})
    return rows
