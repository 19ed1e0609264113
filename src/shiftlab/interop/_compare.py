"""Paired comparison of two evaluations of the same samples (``shiftlab compare``).

Samples pair by ``id`` (and ``epoch``); each pair's difference is B's value minus A's. The
estimate is the mean difference over pairs; its standard error is cluster-robust (CR1:
pairs in one cluster are correlated, by default the epochs of one sample id) and its 95%
interval uses Student's t with G − 1 degrees of freedom, clipped to the range the
difference can take. The p-value is shiftlab's exact sign-flip test over clusters (each
cluster's summed difference flips sign as a whole; exact up to 16 clusters, Monte Carlo
beyond), so it never falls below what G clusters can resolve (``p_min``), and with fewer
than 2 clusters the interval is the whole range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from shiftlab.attribution._inference import sign_flip
from shiftlab.errors import ShiftlabError

KEYS = ("id", "epoch")


@dataclass(frozen=True)
class PairedComparison:
    """The result of :func:`compare_samples`: ``frame`` (one tidy row) and ``line``."""

    frame: pl.DataFrame

    @property
    def line(self) -> str:
        """The comparison in one sentence."""
        return format_line(self.frame.row(0, named=True))

    def __str__(self) -> str:
        return self.line


# inspect_ai's letter scores as its own ``value_to_float`` reads them.
LETTERS = {"C": 1.0, "I": 0.0, "P": 0.5, "N": 0.0}


def _score_column(values: list[Any]) -> list[Any]:
    """One score's values: numbers (booleans and inspect_ai's letters C, I, P, N read as
    its ``value_to_float`` does) when every value is one, else text."""
    if all(v is None or isinstance(v, int | float) or v in LETTERS for v in values):
        return [None if v is None else LETTERS[v] if isinstance(v, str) else float(v)
                for v in values]  # fmt: skip
    return [None if v is None else str(v) for v in values]


def sample_frame(log: Any) -> pl.DataFrame:
    """An inspect_ai log (an ``EvalLog`` or a path to one) as a polars frame in
    ``samples_df``'s names: ``id``, ``epoch``, ``score_<name>`` and ``metadata_<key>``."""
    from inspect_ai.log import EvalLog, read_eval_log

    if not isinstance(log, EvalLog):
        try:
            log = read_eval_log(str(log))
        except FileNotFoundError:
            raise ShiftlabError(f"{log}: no such inspect log") from None
        except Exception as error:  # inspect_ai raises several types for a bad file
            raise ShiftlabError(f"{log}: not a readable inspect log ({error})") from None
    samples = log.samples or []
    columns: dict[str, list[Any]] = {
        "id": [str(s.id) for s in samples], "epoch": [s.epoch for s in samples]
    }  # fmt: skip
    names = sorted({name for s in samples for name in s.scores or {}})
    for name in names:
        values = [(s.scores or {}).get(name) for s in samples]
        columns[f"score_{name}"] = _score_column([v and v.value for v in values])
    keys = sorted({key for s in samples for key in s.metadata})
    for key in keys:
        values = [s.metadata.get(key) for s in samples]
        if all(v is None or isinstance(v, str | int | float | bool) for v in values):
            columns[f"metadata_{key}"] = values
    return pl.DataFrame(columns, strict=False)


def _frame(data: Any, label: str) -> pl.DataFrame:
    if isinstance(data, pl.DataFrame):
        return data
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        return pl.from_pandas(data)
    frame = sample_frame(data)
    if frame.is_empty():
        raise ShiftlabError(f"{label}: the log holds no samples")
    return frame


def _column(frame: pl.DataFrame, name: str) -> str | None:
    for candidate in (name, f"score_{name}", f"metadata_{name}"):
        if candidate in frame.columns:
            return candidate
    return None


def _metric(a: pl.DataFrame, b: pl.DataFrame, metric: str | None) -> tuple[str, str]:
    """(metric name, column) for both frames."""
    if metric is not None:
        column = _column(a, metric)
        if column is None or column not in b.columns:
            raise ShiftlabError(
                f"--metric {metric}: not a score of both evaluations "
                f"(scores: {', '.join(c.removeprefix('score_') for c in _scores(a)) or 'none'})"
            )
        return metric, column
    numeric = [c for c in _scores(a) if c in b.columns and b.schema[c].is_numeric()]
    numeric = [c for c in numeric if a.schema[c].is_numeric() and a[c].null_count() < a.height]
    if len(numeric) != 1:
        named = ", ".join(c.removeprefix("score_") for c in numeric) or "none"
        raise ShiftlabError(f"choose a score with --metric (numeric scores of both: {named})")
    return numeric[0].removeprefix("score_"), numeric[0]


def _scores(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("score_")]


def _keys(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    if "id" not in frame.columns:
        raise ShiftlabError(f"{label}: expected an 'id' column (inspect_ai's samples_df names)")
    if "epoch" not in frame.columns:
        frame = frame.with_columns(epoch=pl.lit(1))
    frame = frame.with_columns(pl.col("id").cast(pl.String), pl.col("epoch").cast(pl.Int64))
    duplicated = frame.select(KEYS).is_duplicated()
    if duplicated.any():
        first = frame.filter(duplicated).row(0, named=True)
        raise ShiftlabError(
            f"{label}: sample {first['id']!r} epoch {first['epoch']} appears more than once"
        )
    return frame


def _bounds(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The range a paired difference can take: [-1, 1] for scores in [0, 1], else the
    range the observed values allow."""
    if min(a.min(), b.min()) >= 0 and max(a.max(), b.max()) <= 1:
        return -1.0, 1.0
    return float(b.min() - a.max()), float(b.max() - a.min())


def _cr1(d: np.ndarray, codes: np.ndarray) -> float | None:
    """CR1 standard error of the mean of ``d`` clustered by ``codes`` (None below 2)."""
    groups = int(codes.max()) + 1
    if groups < 2:
        return None
    sums = np.bincount(codes, weights=d - d.mean(), minlength=groups)
    return math.sqrt(groups / (groups - 1) * float(sums @ sums)) / len(d)


def compare_samples(
    a: Any,
    b: Any,
    *,
    metric: str | None = None,
    cluster: str | None = None,
    labels: tuple[str, str] = ("A", "B"),
) -> PairedComparison:
    """Compare B with A on the samples both evaluated: two inspect_ai logs (``EvalLog``
    or paths) or two pandas / polars frames in ``samples_df``'s names (``id``, optional
    ``epoch``, ``score_<metric>`` or ``<metric>``, ``metadata_<field>``).

    ``metric`` names the score (default: the only numeric score both have); ``cluster``
    a field whose values group correlated samples (default ``id``: a sample's epochs),
    read from A's samples; pairs missing the score or the field are left out. The
    frame has one row: ``metric, a, b, estimate, se, ci_low, ci_high, p_value, p_min,
    n_pairs, n_clusters, cluster, n_moved, n_up, n_down, share_moved, mean_a, mean_b,
    n_only_a, n_only_b, exact``.

    >>> a = pl.DataFrame({"id": list("abcdefgh"), "score_acc": [1, 0, 0, 1, 0, 0, 1, 0]})
    >>> b = a.with_columns(score_acc=pl.lit(1))
    >>> result = compare_samples(a, b)
    >>> result.frame["estimate"].item(), result.frame["p_value"].item()
    (0.625, 0.0625)
    >>> print(result.line)  # doctest: +ELLIPSIS
    B − A on acc: +0.625 (95% CI 0.19 to 1.00; CR1, 8 clusters by id); sign-flip p = 0.0625 ...
    """
    left = _keys(_frame(a, labels[0]), labels[0])
    right = _keys(_frame(b, labels[1]), labels[1])
    name, column = _metric(left, right, metric)
    cluster_column = "id"
    if cluster is not None:
        found = _column(left, cluster)
        if found is None:
            raise ShiftlabError(f"--cluster {cluster}: not a field of {labels[0]}'s samples")
        cluster_column = found
    take = [*KEYS, column, *([cluster_column] if cluster_column not in KEYS else [])]
    joined = left.select(take).join(
        right.select(*KEYS, pl.col(column).alias("_b")), on=list(KEYS), how="inner"
    )
    paired = joined.drop_nulls([column, "_b", cluster_column])
    if paired.is_empty():
        raise ShiftlabError(
            f"{labels[0]} and {labels[1]} share no sample (by id and epoch) with a {name} score"
        )
    va = paired[column].cast(pl.Float64).to_numpy()
    vb = paired["_b"].cast(pl.Float64).to_numpy()
    d = vb - va
    codes = paired[cluster_column].cast(pl.String).rank("dense").cast(pl.Int64).to_numpy() - 1
    groups = int(codes.max()) + 1
    low, high = _bounds(va, vb)
    estimate = float(d.mean())
    se = _cr1(d, codes)
    if se is None:
        ci_low, ci_high = low, high
    else:
        from scipy import stats

        half = float(stats.t.ppf(0.975, groups - 1)) * se
        ci_low, ci_high = max(low, estimate - half), min(high, estimate + half)
    test = sign_flip(np.bincount(codes, weights=d), bounds=(-math.inf, math.inf))
    moved = d != 0
    row = {
        "metric": name,
        "a": labels[0],
        "b": labels[1],
        "estimate": estimate,
        "se": se,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "p_value": test.p_value,
        "p_min": test.p_min,
        "n_pairs": len(d),
        "n_clusters": groups,
        "cluster": cluster_column.removeprefix("metadata_"),
        "n_moved": int(moved.sum()),
        "n_up": int((d > 0).sum()),
        "n_down": int((d < 0).sum()),
        "share_moved": float(moved.mean()),
        "mean_a": float(va.mean()),
        "mean_b": float(vb.mean()),
        "n_only_a": left.height - joined.height,
        "n_only_b": right.height - joined.height,
        "exact": test.exact,
    }
    return PairedComparison(pl.DataFrame([row], schema_overrides={"se": pl.Float64}))


def format_p(p: float) -> str:
    """A p-value in three significant digits, never printed as 0.

    >>> format_p(0.0625), format_p(0.00012345), format_p(1.0)
    ('0.0625', '0.000123', '1')
    """
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.2e}"


def format_line(row: dict[str, Any]) -> str:
    """One comparison row as one sentence."""
    interval = f"95% CI {row['ci_low']:.2f} to {row['ci_high']:.2f}"
    how = "exact" if row["exact"] else "Monte Carlo"
    clusters = f"{row['n_clusters']} cluster{'s' if row['n_clusters'] != 1 else ''}"
    unpaired = ""
    if row["n_only_a"] or row["n_only_b"]:
        unpaired = (
            f"; unpaired: {row['n_only_a']} only in {row['a']}, "
            f"{row['n_only_b']} only in {row['b']}"
        )
    return (
        f"{row['b']} − {row['a']} on {row['metric']}: {row['estimate']:+.3f} ({interval}; CR1, "
        f"{clusters} by {row['cluster']}); sign-flip p = {format_p(row['p_value'])} "
        f"(smallest possible {format_p(row['p_min'])}, {how}); {row['n_moved']} of "
        f"{row['n_pairs']} pairs moved ({row['share_moved']:.0%}: {row['n_up']} up, "
        f"{row['n_down']} down){unpaired}"
    )
