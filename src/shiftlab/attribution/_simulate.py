"""Design tables with planted selection and shift effects, to check the estimators."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

ARM_SHIFT = {"original": 1.0, "relabeled": 0.0, "shuffled": 0.0, "full": 0.0}


def simulate_runs(
    *,
    selection_effect: float = 0.0,
    shift_effect: float = 0.0,
    behaviours: Sequence[str] = ("sycophancy",),
    methods: Sequence[str] = ("self_confidence", "multi_view"),
    n_bases: int = 3,
    organisms_per_base: int = 9,
    n_seeds: int = 1,
    noise: float = 0.05,
    organism_sd: float = 0.05,
    base_sd: float = 0.05,
    shift_noise: float = 0.2,
    seed: int = 0,
) -> pl.DataFrame:
    """A design table (the columns of ``tables/runs.parquet``) with known effects.

    Each run's delta is organism + base effects + ``gamma * shift_kl`` + the selection
    effect on ``full`` runs + noise, where ``shift_kl`` is 1 on ``original`` runs and 0
    on self-labelled ones, plus ``shift_noise``; ``gamma = -shift_effect``. So
    E[full - shuffled] = ``selection_effect`` and E[relabeled - original] =
    ``shift_effect``, wholly mediated by ``shift_kl``. As in a real study, ``relabeled``
    and ``original`` are one run per (organism, seed) shared by every method, and
    ``none`` rows have no run and a delta of 0.

    >>> runs = simulate_runs(selection_effect=-0.2, seed=0)
    >>> runs.height, sorted(set(runs["arm"]))
    (270, ['full', 'none', 'original', 'relabeled', 'shuffled'])
    """
    rng = np.random.default_rng(seed)
    gamma = -shift_effect
    rows = []
    for behaviour in behaviours:
        for b in range(n_bases):
            base_effect = rng.normal(0, base_sd)
            for o in range(organisms_per_base):
                organism = f"base{b}__{behaviour}__s{o}"
                organism_effect = rng.normal(0, organism_sd)
                before = float(np.clip(rng.normal(0.6, 0.1), 0, 1))
                for s in range(n_seeds):
                    shared: dict[str, tuple[str, float, float]] = {}
                    for method in methods:
                        for arm in ("full", "shuffled", "relabeled", "original", "none"):
                            if arm == "none":
                                run_id, delta, shift = None, 0.0, None
                            elif arm in ("relabeled", "original") and arm in shared:
                                run_id, delta, shift = shared[arm]
                            else:
                                shift = ARM_SHIFT[arm] + rng.normal(0, shift_noise)
                                delta = (organism_effect + base_effect + gamma * shift
                                         + selection_effect * (arm == "full")
                                         + rng.normal(0, noise))  # fmt: skip
                                key = method if arm in ("full", "shuffled") else "shared"
                                run_id = f"{organism}__{key}__{arm}__r{s}"
                                shared[arm] = (run_id, delta, shift)
                            rows.append({
                                "run_id": run_id, "organism_id": organism,
                                "base_model": f"base{b}", "behaviour": behaviour,
                                "organism_seed": o, "seed": s, "method": method, "arm": arm,
                                "k": None, "n_train": 0 if run_id is None else 32,
                                "behaviour_before": before,
                                "behaviour_after": before + delta, "delta": delta,
                                "shift_kl": shift,
                            })  # fmt: skip
    return pl.DataFrame(rows, schema_overrides={"k": pl.Int64, "shift_kl": pl.Float64})
