"""Design tables with planted organism-level effects, to check the estimators."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from shiftlab.spec import PAIRED_METHODS

# The representation shift each arm's targets carry on average (the mediator).
ARM_SHIFT = {"full": 0.5, "shuffled": 0.5, "relabeled": 0.0, "original": 1.0}
SHARED_ARMS = ("relabeled", "original")


def simulate_runs(
    *,
    selection_effect: float = 0.0,
    shift_effect: float = 0.0,
    relabeling_effect: float = 0.0,
    reference_effect: float = 0.0,
    behaviours: Sequence[str] = ("sycophancy",),
    methods: Sequence[str] = ("self_confidence", "multi_view"),
    n_bases: int = 3,
    organisms_per_base: int = 9,
    n_seeds: int = 1,
    noise: float = 0.05,
    organism_sd: float = 0.05,
    base_sd: float = 0.05,
    shift_noise: float = 0.2,
    n_eval: int = 64,
    seed: int = 0,
) -> pl.DataFrame:
    """A design table (the columns of ``tables/runs.parquet``) with known effects.

    Each organism i draws its own selection effect and label-shift effect, normal about
    ``selection_effect`` and ``shift_effect`` with spread ``organism_sd``; its base
    model moves the label-shift effect (the level of its self-trained arms) by a draw
    with spread ``base_sd``; every run adds ``noise``. A ``shuffled`` run's delta is
    the organism's label-shift effect, a ``full`` run's that plus its selection effect,
    so E[full - shuffled] = ``selection_effect`` and E[shuffled - none] =
    ``shift_effect`` over organisms. ``relabeled`` and ``original`` runs (one per
    organism and seed, shared by every method, as in a study) have mean deltas
    ``relabeling_effect`` and ``reference_effect``, and their difference goes wholly
    through the mediator ``shift_mmd`` (0 on relabeled, 1 on original targets on
    average, plus ``shift_noise``). ``greedy_self_training`` has no selection: its full
    and shuffled arms are its relabeled run; a paired-loss method (``bct``, ``act``) has
    only ``full`` (its delta the organism's label-shift effect) and ``none``. ``none``
    rows have no run and a delta of 0. Rates stay inside [0, 1] (before-rates near 0.5);
    each study is one behaviour, so many simulated studies fit in one table.

    >>> runs = simulate_runs(selection_effect=-0.2, seed=0)
    >>> runs.height, sorted(set(runs["arm"]))
    (270, ['full', 'none', 'original', 'relabeled', 'shuffled'])
    """
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    n_organisms = n_bases * organisms_per_base
    for behaviour in behaviours:
        base = np.repeat(rng.normal(0, base_sd, n_bases), organisms_per_base)
        effects = rng.normal(0, organism_sd, (n_organisms, 2))
        selection = selection_effect + effects[:, 0]
        label_shift = shift_effect + base + effects[:, 1]
        comparator = relabeling_effect + rng.normal(0, organism_sd, n_organisms)
        before = rng.uniform(0.4, 0.6, n_organisms)
        for i in range(n_organisms):
            b, o = divmod(i, organisms_per_base)
            organism = f"base{b}__{behaviour}__s{o}"
            for s in range(n_seeds):
                shared: dict[str, tuple[str, float, float]] = {}
                for arm in SHARED_ARMS:
                    mediator = ARM_SHIFT[arm] + rng.normal(0, shift_noise)
                    mean = comparator[i] + (reference_effect - relabeling_effect) * mediator
                    shared[arm] = (f"{organism}__shared__{arm}__r{s}",
                                   mean + rng.normal(0, noise), mediator)  # fmt: skip
                for method in methods:
                    arms = ("full", "none") if method in PAIRED_METHODS else (
                        "full", "shuffled", "relabeled", "original", "none")  # fmt: skip
                    for arm in arms:
                        run_id, delta, shift = _run(
                            arm, method, organism, s, shared, selection[i], label_shift[i],
                            noise, shift_noise, rng,
                        )  # fmt: skip
                        after = float(np.clip(before[i] + delta, 0.0, 1.0))
                        rows.append({
                            "run_id": run_id, "organism_id": organism, "base_model": f"base{b}",
                            "behaviour": behaviour, "organism_seed": o, "seed": s,
                            "method": method, "arm": arm, "k": None,
                            "n_train": 0 if run_id is None else 32,
                            "behaviour_before": float(before[i]), "behaviour_after": after,
                            "delta": after - float(before[i]), "n_eval": n_eval,
                            "n_judged": n_eval, "n_unparseable": 0, "few_judged": False,
                            "empty_training_set": False, "shift_mmd": shift,
                        })  # fmt: skip
    return pl.DataFrame(rows, schema_overrides={"k": pl.Int64, "shift_mmd": pl.Float64})


def _run(
    arm: str,
    method: str,
    organism: str,
    seed: int,
    shared: dict[str, tuple[str, float, float]],
    selection: float,
    label_shift: float,
    noise: float,
    shift_noise: float,
    rng: np.random.Generator,
) -> tuple[str | None, float, float | None]:
    """(run id, delta, mediator) of one design-table cell."""
    if arm == "none":
        return None, 0.0, None
    if arm in SHARED_ARMS or method == "greedy_self_training":
        return shared["relabeled" if arm not in SHARED_ARMS else arm]
    mean = label_shift + (selection if arm == "full" else 0.0)
    mediator = ARM_SHIFT[arm] + rng.normal(0, shift_noise)
    return f"{organism}__{method}__{arm}__r{seed}", mean + rng.normal(0, noise), mediator
