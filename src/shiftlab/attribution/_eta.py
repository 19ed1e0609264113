"""The η(s) diagnostic: how misbehaviour varies with a candidate's selection score, and so
how far selecting by that score can move the misbehaviour rate of the training labels."""

from __future__ import annotations

import numpy as np
import polars as pl

from shiftlab._stats import wilson_interval
from shiftlab.attribution._frame import ESTIMATE_SCHEMA, require_columns
from shiftlab.errors import ShiftlabError

ETA_SCHEMA = {**ESTIMATE_SCHEMA, "score_low": pl.Float64, "score_high": pl.Float64}


def eta_curve(pools: pl.DataFrame, *, n_bins: int = 10) -> pl.DataFrame:
    """Binned misbehaviour rate η of pool candidates against their selection ``score``,
    the bound it puts on selection, and the selection effect observed on the labels.

    Scores with at most ``n_bins`` distinct values (a filter's agreement share, a binary
    refinement score) get one bin per value; others quantile bins. The labels selection
    is compared with are what the ``shuffled`` arm picks on average: for an argmax
    operator every candidate of a prompt equally often; for a filter (``selection`` =
    ``filter``, which keeps or drops a prompt's standard answer, candidate 0) the standard
    answers of randomly kept prompts, so only candidate 0 rows enter. Rows: one ``eta``
    per bin (Wilson 95% interval; ``score_low``/``score_high`` its edges), then
    ``label_selection``, the chosen labels' misbehaviour rate minus the compared labels',
    and ``selection_bound``, (max η - min η) times the total variation distance between
    the two label sets' score-bin distributions: how far choosing by the score can move
    the labels' misbehaviour rate when misbehaviour depends on a candidate only through
    its score. It bounds label composition, not the behaviour change after training.
    With one candidate per prompt the two label sets are the same and the bound is 0.
    Grouped by ``behaviour`` and ``method`` when the frame has them.

    >>> rows = [{"prompt_id": str(s // 2), "candidate": s % 2, "score": s / 100,
    ...          "misbehaving": float(s < 30), "chosen": s % 2 == 1} for s in range(100)]
    >>> curve = eta_curve(pl.DataFrame(rows), n_bins=5)
    >>> curve.filter(term="eta")["estimate"].to_list()
    [1.0, 0.5, 0.0, 0.0, 0.0]
    >>> curve.filter(term="label_selection")["estimate"].item()
    0.0
    """
    require_columns(pools, ["prompt_id", "candidate", "score", "misbehaving", "chosen"],
                    "eta_curve")  # fmt: skip
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
        if "selection" in part.columns and (part["selection"] == "filter").any():
            part = part.filter(pl.col("candidate") == 0)
        rows += _curve(part, n_bins, labels.get("behaviour"), labels.get("method"))
    return pl.DataFrame(rows, schema=ETA_SCHEMA)


def _bins(scores: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin of each score, bins' low edges, high edges): one bin per value when there are
    at most ``n_bins`` values, else quantile bins."""
    values = np.unique(scores)
    if len(values) <= n_bins:
        return np.searchsorted(values, scores), values, values
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2)
    return which, edges[:-1], edges[1:]


def _curve(part: pl.DataFrame, n_bins: int, behaviour: str | None, method: str | None) -> list:
    scores = part["score"].to_numpy().astype(float)
    bad = part["misbehaving"].to_numpy().astype(float)
    chosen = part["chosen"].to_numpy().astype(bool)
    # The shuffled arm's expected pick: each prompt's candidates equally often.
    per_prompt = part.select(pl.len().over("prompt_id"))["len"].to_numpy()
    compared = 1 / per_prompt / part["prompt_id"].n_unique()
    which, lows, highs = _bins(scores, n_bins)
    base = {"behaviour": behaviour, "method": method, "analysis": "eta_curve"}
    rows, rates = [], []
    for b in range(len(lows)):
        members = which == b
        n = int(members.sum())
        if not n:
            continue
        k = int(bad[members].sum())
        low, high = wilson_interval(k, n)
        rates.append(k / n)
        rows.append(base | {"term": "eta", "estimate": k / n, "ci_low": low, "ci_high": high,
                            "n": n, "score_low": float(lows[b]),
                            "score_high": float(highs[b])})  # fmt: skip
    if not chosen.any():
        return rows  # nothing was chosen: no labels to compare
    picked = chosen / chosen.sum()
    observed = float(picked @ bad - compared @ bad)
    p = np.bincount(which, weights=picked, minlength=len(lows))
    q = np.bincount(which, weights=compared, minlength=len(lows))
    bound = (max(rates) - min(rates)) * 0.5 * float(np.abs(p - q).sum())
    rows.append(base | {"term": "label_selection", "estimate": observed, "n": int(chosen.sum())})
    rows.append(base | {"term": "selection_bound", "estimate": bound, "n": len(scores)})
    return rows
