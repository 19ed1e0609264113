"""Exact sign tests of the direction of behaviour change, counting organisms."""

from __future__ import annotations

from typing import Any

import polars as pl

from shiftlab.attribution._frame import (
    ESTIMATE_SCHEMA,
    headline_runs,
    method_role,
    require_columns,
    with_adjusted,
)
from shiftlab.attribution._inference import exact_smallest_p
from shiftlab.errors import ShiftlabError

SIGN_SCHEMA: dict[str, Any] = {
    **ESTIMATE_SCHEMA,
    "n_down": pl.Int64,
    "n_unmoved": pl.Int64,
    "n_up": pl.Int64,
    "role": pl.String,
    # Why a row has no estimate (a pair kept in the table with no delta to summarise).
    "note": pl.String,
}
# A mean delta this close to 0 is rounding, not a move.
UNMOVED = 1e-12
MOVED = (
    "An organism moved when the mean Δ of its runs (over methods and seeds) differs from 0 "
    "by more than {threshold:g}"
)


def organism_deltas(runs: pl.DataFrame) -> pl.DataFrame:
    """Each organism's mean delta over the given runs: ``organism_id, delta``.

    >>> runs = pl.DataFrame({"organism_id": ["b", "a", "a"], "delta": [0.25, -0.5, 0.25]})
    >>> organism_deltas(runs).rows()
    [('a', -0.125), ('b', 0.25)]
    """
    return (
        runs.drop_nulls("delta")
        .group_by("organism_id")
        .agg(pl.col("delta").mean())
        .sort("organism_id")
    )


def sign_row(
    analysis: str,
    behaviour: str,
    method: str | None,
    runs: pl.DataFrame,
    *,
    moved_at: float = 0.0,
) -> dict[str, Any]:
    """One exact sign-test row over organisms: how many went down, stayed, went up (an
    organism's mean delta over ``runs``; it moved when |mean| > ``moved_at``), the share
    of moved organisms that went down with its exact 95% interval, and the two-sided
    binomial p (``p_min`` = 2 / 2^n for n moved organisms). Shared by the sign tests and
    the method table."""
    from scipy.stats import binomtest

    deltas = organism_deltas(runs)["delta"]
    threshold = max(moved_at, UNMOVED)
    down, up = int((deltas < -threshold).sum()), int((deltas > threshold).sum())
    n = down + up
    row: dict[str, Any] = {"analysis": analysis, "behaviour": behaviour, "method": method,
                           "term": "share_down", "n": n, "n_clusters": deltas.len(),
                           "n_down": down, "n_up": up, "n_unmoved": deltas.len() - n,
                           "role": "consistency_training" if method is None
                           else method_role(method)}  # fmt: skip
    if n:
        test = binomtest(down, n, 0.5, alternative="two-sided")
        interval = test.proportion_ci(confidence_level=0.95, method="exact")
        row |= {"estimate": down / n, "ci_low": interval.low, "ci_high": interval.high,
                "p_value": test.pvalue, "p_min": exact_smallest_p(n)}  # fmt: skip
    return row


def sign_tests(
    runs: pl.DataFrame, *, arm: str = "full", moved_at: float = 0.0, adjust: str = "holm"
) -> pl.DataFrame:
    """Exact two-sided sign tests over organisms that the behaviour goes down as often as
    up, on the ``arm`` rows at each method's full candidate count.

    ``sign_test`` rows (``method`` null) pool the consistency-training methods (an
    organism's mean delta over them); ``sign_test_by_method`` has one row per method,
    the controls and paired-loss methods in their own rows (``role``). Each row counts
    organisms that went down, stayed (|mean delta| <= ``moved_at``) and went up;
    ``estimate`` is the share of moved organisms that went down, with its exact 95%
    interval, ``p_min`` the smallest p that many organisms allow, and ``p_adjusted``
    adjusts within each analysis.

    >>> from shiftlab.attribution import simulate_runs
    >>> table = sign_tests(simulate_runs(selection_effect=-0.2, seed=1))
    >>> row = table.filter(analysis="sign_test").row(0, named=True)
    >>> row["n_down"], row["n_up"], row["p_value"] == row["p_min"] == 2 / 2**27
    (27, 0, True)
    """
    require_columns(runs, ["behaviour", "method", "arm", "k", "delta", "organism_id"],
                    "sign_tests")  # fmt: skip
    chosen = headline_runs(runs).filter(pl.col("arm") == arm, pl.col("delta").is_not_null())
    if chosen.is_empty():
        raise ShiftlabError(f"sign_tests: no runs of arm {arm!r} with a delta")
    rows = []
    consistency = pl.col("method").map_elements(method_role, return_dtype=pl.String)
    pooled = chosen.filter(consistency == "consistency_training")
    for (behaviour,), part in pooled.group_by("behaviour", maintain_order=True):
        rows.append(sign_row("sign_test", str(behaviour), None, part, moved_at=moved_at))
    for (behaviour, method), part in chosen.group_by("behaviour", "method", maintain_order=True):
        rows.append(sign_row("sign_test_by_method", str(behaviour), str(method), part,
                             moved_at=moved_at))  # fmt: skip
    frame = pl.DataFrame([{c: r.get(c) for c in SIGN_SCHEMA} for r in rows], schema=SIGN_SCHEMA)
    return with_adjusted(frame, adjust).sort("analysis", "behaviour", "method")
