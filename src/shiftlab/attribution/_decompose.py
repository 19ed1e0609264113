"""Selection vs labelling shift from the arm contrasts, and mediation through shift, with
cluster-bootstrap intervals (organisms resampled with replacement)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl

from shiftlab.attribution._frame import estimates, headline_runs, require_columns, with_adjusted
from shiftlab.errors import ShiftlabError

# effect name: (arm, arm it is compared with), paired within organism
CONTRASTS = {"selection": ("full", "shuffled"), "labelling_shift": ("relabeled", "original")}


def _bootstrap(
    estimate: float, draws: np.ndarray, analysis: str, term: str, n: int, clusters: int
) -> dict[str, Any]:
    """An estimate with its cluster-bootstrap standard error, a 95% interval and a
    two-sided p-value from a t distribution with G - 1 degrees of freedom (G clusters).

    The bootstrap se is scaled by sqrt(G / (G - 1)): resampling G clusters understates the
    variance by that factor. Percentile intervals covered the truth in only 91% of
    simulated studies with 27 organisms; this interval covers it in 92-98%.
    """
    from scipy import stats

    draws = draws[np.isfinite(draws)]
    base = {"analysis": analysis, "term": term, "n": n, "n_clusters": clusters}
    if not np.isfinite(estimate):
        return base  # e.g. a proportion mediated of a zero total: null, not NaN
    if len(draws) < 2:
        return base | {"estimate": estimate}
    se = float(draws.std(ddof=1)) * np.sqrt(clusters / (clusters - 1))
    quantile = stats.t.ppf(0.975, clusters - 1)
    p_value = float(2 * stats.t.sf(abs(estimate) / se, clusters - 1)) if se > 0 else None
    return base | {
        "estimate": estimate,
        "se": se,
        "ci_low": estimate - quantile * se,
        "ci_high": estimate + quantile * se,
        "p_value": p_value,
    }


def _paired_differences(part: pl.DataFrame, arm: str, other: str) -> np.ndarray:
    """Per organism: the mean over its methods of (mean delta on ``arm`` - mean delta on
    ``other``), counting only methods that have both arms for that organism."""
    means = (
        part.filter(pl.col("arm").is_in([arm, other]), pl.col("delta").is_not_null())
        .group_by("organism_id", "method", "arm")
        .agg(pl.col("delta").mean())
        .pivot(on="arm", index=["organism_id", "method"], values="delta")
    )
    if arm not in means.columns or other not in means.columns:
        return np.empty(0)
    paired = (
        means.drop_nulls([arm, other])
        .group_by("organism_id")
        .agg((pl.col(arm) - pl.col(other)).mean().alias("difference"))
        .sort("organism_id")
    )
    return paired["difference"].to_numpy()


def decompose(
    runs: pl.DataFrame, *, n_boot: int = 2000, seed: int = 0, adjust: str = "holm"
) -> pl.DataFrame:
    """The selection effect (``full`` - ``shuffled``) per behaviour and method and over all
    methods (``method`` null: an organism's mean over the methods that have both arms),
    and the labelling-shift effect (``relabeled`` - ``original``, whose runs every method
    shares) per behaviour, each paired within organism with a cluster-bootstrap 95%
    interval over organisms. ``n`` and ``n_clusters`` count the paired organisms; a
    contrast with a single paired organism is left out with a warning.

    >>> from shiftlab.attribution import simulate_runs
    >>> runs = simulate_runs(selection_effect=-0.2, shift_effect=0.1, seed=0)
    >>> table = decompose(runs, n_boot=500).filter(pl.col("method").is_null())
    >>> [round(v, 1) for v in table.sort("term")["estimate"]]
    [0.1, -0.2]
    """
    require_columns(runs, ["behaviour", "method", "arm", "k", "delta", "organism_id"],
                    "decompose")  # fmt: skip
    if n_boot < 100:
        raise ShiftlabError(f"n_boot: at least 100 bootstrap draws, got {n_boot}")
    rng = np.random.default_rng(seed)
    chosen = headline_runs(runs)
    rows = []
    lonely: list[str] = []  # contrasts with one paired organism: no interval possible
    for term, (arm, other) in CONTRASTS.items():
        found = False
        for (behaviour,), part in chosen.group_by("behaviour", maintain_order=True):
            # relabeled and original runs are shared by every method, so the labelling
            # contrast exists once per behaviour; selection is per method and pooled.
            groups: list[tuple[str | None, pl.DataFrame]] = []
            if term == "selection":
                groups = [(str(m), p) for (m,), p in part.group_by("method", maintain_order=True)]
            for method, subset in [*groups, (None, part)]:
                diffs = _paired_differences(subset, arm, other)
                if len(diffs) < 2:
                    if len(diffs) == 1:
                        lonely.append(f"{behaviour}/{method or 'all methods'} {term}")
                    continue
                found = True
                draws = diffs[rng.integers(0, len(diffs), (n_boot, len(diffs)))].mean(1)
                row = _bootstrap(float(diffs.mean()), draws, "decomposition", term,
                                 len(diffs), len(diffs))  # fmt: skip
                rows.append(row | {"behaviour": str(behaviour), "method": method})
        if not found:
            raise ShiftlabError(
                f"decompose: no two organisms have both {arm!r} and {other!r} runs with a "
                f"delta, so the {term} effect cannot be paired and bootstrapped"
            )
    if lonely:
        warnings.warn(
            f"decompose: left out {len(lonely)} contrast(s) with a single paired organism "
            f"(a cluster bootstrap needs 2), e.g. {lonely[0]}",
            stacklevel=2,
        )
    return with_adjusted(estimates(rows), adjust)


def _mediation_paths(t: np.ndarray, m: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(a, b, c'): m = a0 + a t; y = b0 + c' t + b m, by least squares."""
    ones = np.ones_like(t)
    a = np.linalg.lstsq(np.column_stack([ones, t]), m, rcond=None)[0][1]
    _, direct, b = np.linalg.lstsq(np.column_stack([ones, t, m]), y, rcond=None)[0]
    return float(a), float(b), float(direct)


def _mediation_effects(
    arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]], chosen: Iterable[int]
) -> tuple[float, float, float, float]:
    """(indirect, direct, total, proportion mediated) over the ``chosen`` organisms'
    (treatment, mediator, delta) arrays; an organism drawn twice counts twice."""
    picked = list(chosen)
    t, m, y = (np.concatenate([arrays[i][j] for i in picked]) for j in range(3))
    a, b, direct = _mediation_paths(t, m, y)
    total = direct + a * b
    return a * b, direct, total, (a * b / total) if total else np.nan


def mediation(
    runs: pl.DataFrame,
    mediator: str = "shift_kl",
    *,
    treated: str = "relabeled",
    control: str = "original",
    n_boot: int = 2000,
    seed: int = 0,
) -> pl.DataFrame:
    """Arm -> ``mediator`` -> delta per behaviour, on the ``treated`` and ``control`` runs
    (each distinct run once): the indirect effect a*b, the direct effect c', the total
    and the proportion mediated, with cluster-bootstrap 95% intervals over organisms.
    Both paths are fitted on within-organism deviations (organism fixed effects).

    >>> from shiftlab.attribution import simulate_runs
    >>> runs = simulate_runs(shift_effect=0.2, seed=0)
    >>> effects = mediation(runs, n_boot=500)
    >>> direct = effects.filter(term="direct").row(0, named=True)
    >>> direct["ci_low"] < 0 < direct["ci_high"]  # all of it goes through shift_kl
    True
    """
    require_columns(runs, ["behaviour", "arm", "delta", "organism_id", "run_id", mediator],
                    "mediation")  # fmt: skip
    rng = np.random.default_rng(seed)
    used = (
        runs.filter(pl.col("arm").is_in([treated, control]))
        .drop_nulls(["delta", mediator, "run_id"])
        .unique("run_id", keep="first", maintain_order=True)
    )
    rows = []
    for (behaviour,), part in used.group_by("behaviour", maintain_order=True):
        arms = set(part["arm"])
        if arms != {treated, control}:
            raise ShiftlabError(
                f"mediation: behaviour {behaviour!r} needs both {treated!r} and {control!r} "
                f"runs with {mediator} and delta; it has {sorted(arms)}"
            )
        organisms = part.partition_by("organism_id", maintain_order=True)
        if len(organisms) < 2:
            raise ShiftlabError(f"mediation: behaviour {behaviour!r} has one organism; "
                                "the cluster bootstrap needs at least 2")  # fmt: skip
        # Within-organism deviations: arms are randomised within an organism, shift is
        # not, so between-organism differences must not leak into the mediator's path.
        arrays = [
            tuple(v - v.mean() for v in ((o["arm"] == treated).cast(pl.Float64).to_numpy(),
                                         o[mediator].to_numpy(), o["delta"].to_numpy()))
            for o in organisms
        ]  # fmt: skip

        point = _mediation_effects(arrays, range(len(arrays)))
        draws = np.array(
            [_mediation_effects(arrays, rng.integers(0, len(arrays), len(arrays)))
             for _ in range(n_boot)]
        )  # fmt: skip
        for i, term in enumerate(("indirect", "direct", "total", "proportion_mediated")):
            row = _bootstrap(point[i], draws[:, i], f"mediation_{mediator}", term,
                             part.height, len(arrays))  # fmt: skip
            if term == "proportion_mediated":
                row["p_value"] = None
            rows.append(row | {"behaviour": str(behaviour)})
    if not rows:
        raise ShiftlabError(f"mediation: no {treated!r}/{control!r} runs with {mediator}")
    return with_adjusted(estimates(rows))
