"""Mediation of an arm contrast through a shift measure, fitted within organisms, with
cluster-bootstrap intervals over organisms; refused where it is not identified."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl

from shiftlab.attribution._frame import estimates, require_columns, with_adjusted
from shiftlab.attribution._inference import MIN_ORGANISMS, RATE_DIFFERENCE, ZERO_SE
from shiftlab.errors import ShiftlabError


def _bootstrap(
    estimate: float, draws: np.ndarray, analysis: str, term: str, n: int, clusters: int
) -> dict[str, Any]:
    """An estimate with its cluster-bootstrap standard error, a 95% interval and a
    two-sided p-value from a t distribution with G - 1 degrees of freedom (G clusters).

    The bootstrap se is scaled by sqrt(G / (G - 1)): resampling G clusters understates the
    variance by that factor. An se below 1e-12 is zero: no interval, no p-value.
    """
    from scipy import stats

    draws = draws[np.isfinite(draws)]
    base = {"analysis": analysis, "term": term, "n": n, "n_clusters": clusters,
            "estimate": estimate}  # fmt: skip
    if len(draws) < 2:
        return base
    se = float(draws.std(ddof=1)) * np.sqrt(clusters / (clusters - 1))
    if se < ZERO_SE:
        return base | {"se": 0.0}
    quantile = stats.t.ppf(0.975, clusters - 1)
    return base | {
        "se": se,
        "ci_low": estimate - quantile * se,
        "ci_high": estimate + quantile * se,
        "p_value": float(2 * stats.t.sf(abs(estimate) / se, clusters - 1)),
    }


def _mediation_paths(t: np.ndarray, m: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(a, b, c'): m = a0 + a t; y = b0 + c' t + b m, by least squares."""
    ones = np.ones_like(t)
    a = np.linalg.lstsq(np.column_stack([ones, t]), m, rcond=None)[0][1]
    _, direct, b = np.linalg.lstsq(np.column_stack([ones, t, m]), y, rcond=None)[0]
    return float(a), float(b), float(direct)


def _mediation_effects(
    arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]], chosen: Iterable[int]
) -> tuple[float, float, float]:
    """(indirect, direct, total) over the ``chosen`` organisms' (treatment, mediator,
    delta) arrays; an organism drawn twice counts twice."""
    picked = list(chosen)
    t, m, y = (np.concatenate([arrays[i][j] for i in picked]) for j in range(3))
    a, b, direct = _mediation_paths(t, m, y)
    return a * b, direct, direct + a * b


def _varies_within(arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> bool:
    """Whether the mediator's within-organism deviations vary beyond what the arm
    explains (else b and the indirect effect are not identified)."""
    t, m = (np.concatenate([a[j] for a in arrays]) for j in range(2))
    fitted = np.column_stack([np.ones_like(t), t])
    residual = m - fitted @ np.linalg.lstsq(fitted, m, rcond=None)[0]
    return float(residual.std()) > 1e-9 * max(1.0, float(np.abs(m).max()))


def mediation(
    runs: pl.DataFrame,
    mediator: str = "shift_mmd",
    *,
    treated: str = "original",
    control: str = "relabeled",
    n_boot: int = 2000,
    seed: int = 0,
    min_organisms: int = MIN_ORGANISMS,
) -> pl.DataFrame:
    """Arm -> ``mediator`` -> delta per behaviour, on the ``treated`` and ``control`` runs
    (each distinct run once): the indirect effect a*b, the direct effect c' and the
    total, with cluster-bootstrap 95% intervals over organisms (inside [-1, 1], where
    a difference of rates lies), and the proportion mediated only where the total's
    interval excludes 0. Both paths are fitted on within-organism deviations (organism
    fixed effects).

    The default mediator is a representation measure (MMD² of a run's targets against
    the organism's own samples). A behaviour is refused, with a warning, when it has
    fewer than ``min_organisms`` organisms or its mediator does not vary within
    organisms beyond the arm itself, or so little that the fitted indirect or direct
    effect lies outside [-1, 1].

    >>> from shiftlab.attribution import simulate_runs
    >>> runs = simulate_runs(reference_effect=-0.2, seed=0)
    >>> effects = mediation(runs, n_boot=500)
    >>> direct = effects.filter(term="direct").row(0, named=True)
    >>> direct["ci_low"] < 0 < direct["ci_high"]  # all of it goes through shift_mmd
    True
    """
    require_columns(runs, ["behaviour", "arm", "delta", "organism_id", "run_id", mediator],
                    "mediation")  # fmt: skip
    if n_boot < 100:
        raise ShiftlabError(f"n_boot: at least 100 bootstrap draws, got {n_boot}")
    rng = np.random.default_rng(seed)
    used = (
        runs.filter(pl.col("arm").is_in([treated, control]))
        .drop_nulls(["delta", mediator, "run_id"])
        .unique("run_id", keep="first", maintain_order=True)
    )
    rows, refused = [], []
    for (behaviour,), part in used.group_by("behaviour", maintain_order=True):
        arms = set(part["arm"])
        if arms != {treated, control}:
            raise ShiftlabError(
                f"mediation: behaviour {behaviour!r} needs both {treated!r} and {control!r} "
                f"runs with {mediator} and delta; it has {sorted(arms)}"
            )
        organisms = part.partition_by("organism_id", maintain_order=True)
        if len(organisms) < min_organisms:
            refused.append(f"{behaviour}: G = {len(organisms)} organisms; at least "
                           f"{min_organisms} are needed")  # fmt: skip
            continue
        # Within-organism deviations: arms are randomised within an organism, shift is
        # not, so between-organism differences must not leak into the mediator's path.
        arrays = [
            tuple(v - v.mean() for v in ((o["arm"] == treated).cast(pl.Float64).to_numpy(),
                                         o[mediator].to_numpy(), o["delta"].to_numpy()))
            for o in organisms
        ]  # fmt: skip
        if not _varies_within(arrays):
            refused.append(f"{behaviour}: {mediator} does not vary within organisms beyond "
                           "the arm, so its path to delta is not identified")  # fmt: skip
            continue
        point = _mediation_effects(arrays, range(len(arrays)))
        outside = [f"{term} {value:+.2f}"
                   for term, value in zip(("indirect", "direct"), point[:2], strict=True)
                   if not RATE_DIFFERENCE[0] <= value <= RATE_DIFFERENCE[1]]  # fmt: skip
        if outside:
            # A linear path fitted to a mediator nearly collinear with the arm extrapolates
            # past any possible difference of rates: the data cannot carry the split.
            refused.append(
                f"{behaviour}: the fitted {' and '.join(outside)} lie outside "
                f"[-1, 1], where a difference of rates lies; {mediator} varies "
                "too little within organisms beyond the arm to split the change"
            )
            continue
        draws = np.array(
            [_mediation_effects(arrays, rng.integers(0, len(arrays), len(arrays)))
             for _ in range(n_boot)]
        )  # fmt: skip
        found = {}
        for i, term in enumerate(("indirect", "direct", "total")):
            found[term] = _bootstrap(point[i], draws[:, i], f"mediation_{mediator}", term,
                                     part.height, len(arrays))  # fmt: skip
        # Each effect is a difference of rates by its counterfactual definition (the
        # indirect one: treated rate with the treated mediator minus with the control's),
        # so its interval stays in [-1, 1] even where a*b's bootstrap spread does not.
        for effect in found.values():
            if "ci_low" in effect:
                effect["ci_low"] = max(effect["ci_low"], RATE_DIFFERENCE[0])
                effect["ci_high"] = min(effect["ci_high"], RATE_DIFFERENCE[1])
        total = found["total"]
        rows += [row | {"behaviour": str(behaviour)} for row in found.values()]
        if "ci_low" in total and (total["ci_low"] > 0 or total["ci_high"] < 0):
            share = draws[:, 0] / draws[:, 2]
            row = _bootstrap(point[0] / point[2], share, f"mediation_{mediator}",
                             "proportion_mediated", part.height, len(arrays))  # fmt: skip
            rows.append(row | {"behaviour": str(behaviour), "p_value": None})
        else:
            refused.append(f"{behaviour}: no proportion mediated, the total's interval "
                           "includes 0")  # fmt: skip
    if refused:
        warnings.warn(f"mediation: {'; '.join(refused)}", stacklevel=2)
    if not rows:
        raise ShiftlabError(f"mediation through {mediator}: no behaviour could be estimated "
                            f"({'; '.join(refused) or 'no runs'})")  # fmt: skip
    return with_adjusted(estimates(rows))
