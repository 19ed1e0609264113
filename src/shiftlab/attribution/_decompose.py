"""The behaviour change split into a selection part and a label-shift part that add up,
with the comparators beside them, each tested over organisms by sign flips."""

from __future__ import annotations

import warnings
import zlib
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl

from shiftlab.attribution._frame import (
    ESTIMATE_SCHEMA,
    full_k_runs,
    method_role,
    require_columns,
    with_adjusted,
)
from shiftlab.attribution._inference import N_RESAMPLES, SignFlip, sign_flip
from shiftlab.errors import ShiftlabError
from shiftlab.spec import METHOD_FACTS

# term: (arm, arm it is compared with), paired within organism. total = selection +
# label_shift exactly; relabeling and reference are comparators, not parts of the change.
CONTRASTS = {
    "total": ("full", "none"),
    "selection": ("full", "shuffled"),
    "label_shift": ("shuffled", "none"),
    "relabeling": ("relabeled", "none"),
    "reference": ("original", "none"),
}
PARTS = ("total", "selection", "label_shift")
DECOMPOSITION_SCHEMA: dict[str, Any] = {
    **ESTIMATE_SCHEMA,
    "role": pl.String,
    "has_selection": pl.Boolean,
}


def _organism_arms(runs: pl.DataFrame) -> pl.DataFrame:
    """One row per (behaviour, method, organism): each arm's mean delta over seeds."""
    means = (
        full_k_runs(runs)
        .filter(pl.col("delta").is_not_null())
        .group_by("behaviour", "method", "organism_id", "arm")
        .agg(pl.col("delta").mean())
        .pivot(on="arm", index=["behaviour", "method", "organism_id"], values="delta")
    )
    missing = [arm for arm in ("full", "shuffled", "relabeled", "original", "none")
               if arm not in means.columns]  # fmt: skip
    return means.with_columns(pl.lit(None, pl.Float64).alias(arm) for arm in missing)


def _without_selection(runs: pl.DataFrame) -> set[tuple[str, str]]:
    """(behaviour, method) pairs whose full and shuffled arms train on the same labels:
    greedy self-training, one candidate per prompt, or the same run in every cell."""
    chosen = full_k_runs(runs).filter(pl.col("arm").is_in(["full", "shuffled"]))
    found = set()
    for (behaviour, method), part in chosen.group_by("behaviour", "method"):
        cells = part.pivot(on="arm", index=["organism_id", "seed"], values="run_id",
                           aggregate_function="first")  # fmt: skip
        same = (
            {"full", "shuffled"} <= set(cells.columns)
            and cells.height > 0
            and bool((cells["full"] == cells["shuffled"]).all())
        )
        facts = METHOD_FACTS.get(str(method))
        if (facts is not None and facts.one_candidate) or (part["k"] == 1).any() or same:
            found.add((str(behaviour), str(method)))
    return found


def _group_seed(seed: int, *labels: str | None) -> int:
    """A Monte Carlo seed of its own for each behaviour x method, so separate behaviours
    (separate studies, in a simulation) draw independent sign patterns."""
    return zlib.crc32(":".join([str(seed), *map(str, labels)]).encode())


def _row(test: SignFlip, term: str, **labels: Any) -> dict[str, Any]:
    return {"analysis": "decomposition", "term": term, **test.as_row(), **labels}


def _parts(
    differences: dict[str, np.ndarray], seed: int, n_resamples: int, **labels: Any
) -> list[dict[str, Any]]:
    """Rows for the total and its two parts over the same organisms; the total's estimate
    is the sum of the parts' (equal to mean(full - none) up to rounding), so they add up
    exactly."""
    tests = {t: sign_flip(differences[t], seed=seed, n_resamples=n_resamples) for t in PARTS}
    whole = tests["selection"].estimate + tests["label_shift"].estimate
    tests["total"] = replace(tests["total"], estimate=whole,
                             ci_low=min(tests["total"].ci_low, whole),
                             ci_high=max(tests["total"].ci_high, whole))  # fmt: skip
    return [_row(tests[t], t, **labels) for t in PARTS]


def decompose(
    runs: pl.DataFrame,
    *,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
    adjust: str = "holm",
) -> pl.DataFrame:
    """The behaviour change of the ``full`` arm split into parts that add up, per
    behaviour: ``total`` (full - none) = ``selection`` (full - shuffled) + ``label_shift``
    (shuffled - none, training on the method's own candidates with the score->choice
    link broken), and the comparators ``relabeling`` (relabeled - none) and ``reference``
    (original - none).

    Every term is a mean over organisms of a paired difference (each organism's arms
    averaged over seeds), with a sign-flip p-value (``p_min`` the smallest it could be)
    and the interval that inverts it, inside [-1, 1]. Rows per method (``role``
    consistency_training, control or paired_loss; a paired-loss method has only a
    total), and pooled rows (``method`` null): each organism's mean over the
    consistency-training methods that have a selection step (``has_selection``;
    greedy self-training and one-candidate methods have none and are left out of the
    pool, with a warning), plus the comparators, whose runs every method shares.

    >>> from shiftlab.attribution import simulate_runs
    >>> runs = simulate_runs(selection_effect=-0.2, shift_effect=0.1, seed=0)
    >>> pooled = decompose(runs).filter(pl.col("method").is_null())
    >>> {r["term"]: round(r["estimate"], 1) + 0.0 for r in pooled.iter_rows(named=True)}
    {'total': -0.1, 'selection': -0.2, 'label_shift': 0.1, 'relabeling': 0.0, 'reference': 0.0}
    """
    require_columns(runs, ["behaviour", "method", "arm", "k", "delta", "organism_id", "run_id",
                           "seed"], "decompose")  # fmt: skip
    arms = _organism_arms(runs)
    nil = _without_selection(runs)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for (behaviour,), part in arms.sort("behaviour", "method", "organism_id").group_by(
        "behaviour", maintain_order=True
    ):
        behaviour = str(behaviour)
        pooled: list[pl.DataFrame] = []
        for (method,), own in part.group_by("method", maintain_order=True):
            method = str(method)
            role, selects = method_role(method), (behaviour, method) not in nil
            labels = {"behaviour": behaviour, "method": method, "role": role,
                      "has_selection": selects and role != "paired_loss"}  # fmt: skip
            if role == "paired_loss":
                paired = own.drop_nulls(["full", "none"])
                if paired.height:
                    total = (paired["full"] - paired["none"]).to_numpy()
                    test = sign_flip(total, seed=_group_seed(seed, behaviour, method),
                                     n_resamples=n_resamples)  # fmt: skip
                    rows.append(_row(test, "total", **labels))
                continue
            complete = own.drop_nulls(["full", "shuffled", "none"])
            if complete.height < own.height:
                notes.append(f"{behaviour}/{method}: {own.height - complete.height} "
                             "organism(s) without full, shuffled and none deltas")  # fmt: skip
            if not complete.height:
                continue
            differences = _differences(complete)
            rows += _parts(differences, _group_seed(seed, behaviour, method), n_resamples,
                           **labels)  # fmt: skip
            if role == "consistency_training" and selects:
                pooled.append(complete.select("organism_id", *[pl.Series(t, differences[t])
                                                               for t in PARTS]))  # fmt: skip
            elif not selects:
                pooled_out = ", left out of the pooled parts" * (role == "consistency_training")
                notes.append(f"{behaviour}/{method}: no selection (full and shuffled train "
                             f"on the same labels){pooled_out}")  # fmt: skip
        labels = {"behaviour": behaviour, "method": None, "role": "consistency_training",
                  "has_selection": True}  # fmt: skip
        if pooled:
            per_organism = (pl.concat(pooled).group_by("organism_id").agg(pl.col(PARTS).mean())
                            .sort("organism_id"))  # fmt: skip
            rows += _parts({t: per_organism[t].to_numpy() for t in PARTS},
                           _group_seed(seed, behaviour, None), n_resamples,
                           **labels)  # fmt: skip
        rows += _comparators(runs, behaviour, seed, n_resamples)
    if not rows:
        raise ShiftlabError(
            "decompose: no organism has both a 'full' and a 'none' row with a delta, so no "
            "change can be paired within an organism"
        )
    if notes:
        warnings.warn(f"decompose: {'; '.join(notes)}", stacklevel=2)
    frame = pl.DataFrame(
        [{c: row.get(c) for c in DECOMPOSITION_SCHEMA} for row in rows],
        schema=DECOMPOSITION_SCHEMA,
    )
    return with_adjusted(frame, adjust)


def _differences(arms: pl.DataFrame) -> dict[str, np.ndarray]:
    return {term: (arms[arm] - arms[other]).to_numpy() for term, (arm, other) in
            CONTRASTS.items() if term in PARTS}  # fmt: skip


def _comparators(
    runs: pl.DataFrame, behaviour: str, seed: int, n_resamples: int
) -> list[dict[str, Any]]:
    """relabeling and reference, once per behaviour: each distinct run counts once, so a
    run every method shares is not averaged in several times."""
    own = runs.filter(pl.col("behaviour") == behaviour, pl.col("delta").is_not_null())
    baseline = (own.filter(arm="none").group_by("organism_id")
                .agg(pl.col("delta").mean().alias("none")))  # fmt: skip
    rows = []
    for term in ("relabeling", "reference"):
        arm = CONTRASTS[term][0]
        trained = (
            own.filter(arm=arm)
            .unique(["organism_id", "seed", "run_id"], keep="first", maintain_order=True)
            .group_by("organism_id")
            .agg(pl.col("delta").mean().alias(arm))
            .join(baseline, on="organism_id")
            .sort("organism_id")
        )
        if trained.height:
            test = sign_flip((trained[arm] - trained["none"]).to_numpy(),
                             seed=_group_seed(seed, behaviour, term),
                             n_resamples=n_resamples)  # fmt: skip
            rows.append(_row(test, term, behaviour=behaviour, method=None, role="comparator"))
    return rows
