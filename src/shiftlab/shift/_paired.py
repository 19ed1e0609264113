"""Representation shift between two texts per prompt, as the pipeline measures it for runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shiftlab.errors import ShiftlabError
from shiftlab.shift._classifier import classifier_test
from shiftlab.shift._distances import check_samples
from shiftlab.shift._mmd import mmd_test


@dataclass(frozen=True)
class PairedShift:
    """Shift of y from x where row i of each answers the same prompt.

    ``mmd``: unbiased MMD² (RBF kernel, median bandwidth) with ``mmd_p``, its permutation
    p-value, swapping x[i] and y[i] within each prompt; ``energy``: the energy distance;
    ``c2st_auc``: a logistic-regression probe's out-of-fold AUC (folds grouped by prompt)
    and ``most_shifted``, the rows of y it found most unlike x. A statistic the sample is
    too small for is None (MMD and energy need 2 prompts, the probe ``n_folds``).
    """

    n: int
    mmd: float | None
    mmd_p: float | None
    energy: float | None
    c2st_auc: float | None
    most_shifted: tuple[int, ...]


def paired_shift(
    x: Any,
    y: Any,
    *,
    n_permutations: int = 1000,
    n_folds: int = 5,
    classifier: bool = True,
    seed: int = 0,
) -> PairedShift:
    """MMD², energy distance and a classifier test between paired samples ``x`` and ``y``.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(40, 4))
    >>> same = paired_shift(x, x + rng.normal(0, 0.01, size=(40, 4)))
    >>> moved = paired_shift(x, x + 1.0)
    >>> same.mmd_p > 0.05, moved.mmd_p < 0.01, moved.c2st_auc > 0.8
    (True, True, True)
    """
    n = len(x)
    if n != len(y):
        raise ShiftlabError(f"paired samples must be the same size (x {n}, y {len(y)})")
    if n < 2:
        return PairedShift(n, None, None, None, None, ())
    a, b = check_samples(x, y)
    groups = [*range(n), *range(n)]
    pooled = np.concatenate([a, b])
    if np.all(pooled == pooled[0]):
        # One point repeated: no shift under any kernel, and no bandwidth to pick.
        mmd, mmd_p, energy = 0.0, 1.0, 0.0
    else:
        test = mmd_test(a, b, paired=True, groups=groups, n_permutations=n_permutations, seed=seed)
        mmd, mmd_p = test.statistic, test.p_value
        energy = mmd_test(
            a, b, kernel="energy", paired=True, groups=groups, n_permutations=1, seed=seed
        ).statistic
    auc: float | None = None
    most_shifted: tuple[int, ...] = ()
    if classifier and n >= n_folds:
        probe = classifier_test(a, b, groups=groups, n_folds=n_folds, seed=seed)
        auc, most_shifted = probe.auc, probe.most_shifted
    return PairedShift(n, mmd, mmd_p, energy, auc, most_shifted)
