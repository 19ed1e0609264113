"""Exact sign tests of the direction of behaviour change."""

from __future__ import annotations

from typing import Any

import polars as pl

from shiftlab.attribution._frame import estimates, headline_runs, require_columns, with_adjusted
from shiftlab.errors import ShiftlabError


def sign_row(analysis: str, behaviour: str, method: str | None, part: pl.DataFrame) -> dict:
    """One exact sign-test row: the share of moved runs that went down (shared by the
    sign tests and the method table)."""
    from scipy.stats import binomtest

    moved = part.filter(pl.col("delta") != 0)
    down = int((moved["delta"] < 0).sum())
    n = moved.height
    row: dict[str, Any] = {"analysis": analysis, "behaviour": behaviour, "method": method,
                           "term": "share_down", "n": n,
                           "n_clusters": part["organism_id"].n_unique()}  # fmt: skip
    if n:
        test = binomtest(down, n, 0.5, alternative="two-sided")
        interval = test.proportion_ci(confidence_level=0.95, method="exact")
        row |= {"estimate": down / n, "ci_low": interval.low, "ci_high": interval.high,
                "p_value": test.pvalue}  # fmt: skip
    return row


def sign_tests(runs: pl.DataFrame, *, arm: str = "full", adjust: str = "holm") -> pl.DataFrame:
    """Exact two-sided binomial tests that runs move down as often as up, per behaviour
    and per behaviour x method, on the ``arm`` rows (runs that did not move are left out).

    ``estimate`` is the share of moved runs that moved down, with its exact 95% interval;
    ``p_adjusted`` adjusts within each analysis (``sign_test`` across behaviours;
    ``sign_test_by_method`` across behaviour x method). Runs of one organism are counted
    as independent, as in the paper's tables; ``n_clusters`` says how many organisms
    they come from, and ``decompose`` gives organism-clustered intervals.

    >>> from shiftlab.attribution import simulate_runs
    >>> table = sign_tests(simulate_runs(selection_effect=-0.2, seed=1))
    >>> row = table.filter(analysis="sign_test").row(0, named=True)
    >>> row["estimate"] > 0.8, row["p_value"] < 0.001
    (True, True)
    """
    require_columns(runs, ["behaviour", "method", "arm", "k", "delta", "organism_id"],
                    "sign_tests")  # fmt: skip
    chosen = headline_runs(runs).filter(pl.col("arm") == arm, pl.col("delta").is_not_null())
    if chosen.is_empty():
        raise ShiftlabError(f"sign_tests: no runs of arm {arm!r} with a delta")
    rows = []
    for (behaviour,), part in chosen.group_by("behaviour", maintain_order=True):
        rows.append(sign_row("sign_test", str(behaviour), None, part))
    for (behaviour, method), part in chosen.group_by("behaviour", "method", maintain_order=True):
        rows.append(sign_row("sign_test_by_method", str(behaviour), str(method), part))
    return with_adjusted(estimates(rows), adjust).sort("analysis", "behaviour", "method")
