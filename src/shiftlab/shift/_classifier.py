"""The classifier two-sample test: can a linear probe tell the samples apart?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shiftlab.errors import ShiftlabError
from shiftlab.shift._distances import check_samples


@dataclass(frozen=True)
class ClassifierTestResult:
    """Out-of-fold ROC AUC of a logistic regression telling y from x (0.5: no shift), its
    one-sided Mann-Whitney p-value, and the indices into ``y`` of the ``most_shifted``
    examples (highest out-of-fold probability of being from y)."""

    auc: float
    p_value: float
    most_shifted: tuple[int, ...]
    n_folds: int


def classifier_test(
    x: Any,
    y: Any,
    *,
    groups: Sequence[Any] | None = None,
    n_folds: int = 5,
    n_most_shifted: int = 10,
    seed: int = 0,
) -> ClassifierTestResult:
    """Cross-validated logistic-regression AUC between x (label 0) and y (label 1).

    ``groups`` (one id per row of x then y, e.g. the prompt) keeps a prompt's rows in one
    fold, so the probe cannot win by recognising prompts. The p-value treats out-of-fold
    scores as independent (Mann-Whitney U), which is close for large samples.

    >>> rng = np.random.default_rng(0)
    >>> shifted = classifier_test(rng.normal(size=(200, 5)), rng.normal(0.5, size=(200, 5)))
    >>> shifted.auc > 0.75, shifted.p_value < 1e-6
    (True, True)
    """
    from scipy import stats
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    a, b = check_samples(x, y)
    features = np.concatenate([a, b])
    labels = np.concatenate([np.zeros(len(a)), np.ones(len(b))])
    if min(len(a), len(b)) < n_folds:
        raise ShiftlabError(f"each sample needs at least n_folds={n_folds} rows")
    if groups is not None:
        group_ids = np.asarray(groups)
        if group_ids.shape != (len(labels),):
            raise ShiftlabError(
                f"groups: expected one group per row of x then y ({len(labels)}), "
                f"got shape {group_ids.shape}"
            )
        if len(np.unique(group_ids)) < n_folds:
            raise ShiftlabError(f"groups: fewer than n_folds={n_folds} distinct groups")
        folds = GroupKFold(n_splits=n_folds).split(features, labels, group_ids)
    else:
        folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(
            features, labels
        )
    scores = np.empty(len(labels))
    for train, test in folds:
        if len(np.unique(labels[train])) < 2:
            raise ShiftlabError("a fold's training rows hold one sample only; regroup the data")
        probe = LogisticRegression(max_iter=1000)
        probe.fit(features[train], labels[train])
        scores[test] = probe.predict_proba(features[test])[:, 1]
    u, p_value = stats.mannwhitneyu(scores[len(a) :], scores[: len(a)], alternative="greater")
    auc = float(u) / (len(a) * len(b))
    order = np.argsort(-scores[len(a) :], kind="stable")[:n_most_shifted]
    return ClassifierTestResult(auc, float(p_value), tuple(int(i) for i in order), n_folds)
