"""Distances between two embedding samples that need no permutations."""

from __future__ import annotations

from typing import Any

import numpy as np

from shiftlab.errors import ShiftlabError


def check_samples(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two float64 samples of one width, each at least 2 finite rows, or a clear error."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    for name, v in (("x", a), ("y", b)):
        if v.ndim != 2 or len(v) < 2:
            raise ShiftlabError(f"{name}: expected a 2-D array with at least 2 samples")
        if not np.isfinite(v).all():
            raise ShiftlabError(f"{name}: contains NaN or infinite values")
    if a.shape[1] != b.shape[1]:
        raise ShiftlabError(f"x has {a.shape[1]} features but y has {b.shape[1]}")
    return a, b


def centroid_cosine_distance(x: Any, y: Any) -> float:
    """1 - cos(mean(x), mean(y)).

    >>> centroid_cosine_distance([[1, 0], [1, 0]], [[0, 1], [0, 1]])
    1.0
    """
    a, b = check_samples(x, y)
    u, v = a.mean(0), b.mean(0)
    norms = np.linalg.norm(u) * np.linalg.norm(v)
    if norms == 0:
        raise ShiftlabError("a sample's centroid is the zero vector; cosine is undefined")
    return float(1 - u @ v / norms)


def frechet_distance(x: Any, y: Any) -> float:
    """The Fréchet distance between Gaussians fitted to x and y:
    ||mu_x - mu_y||² + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)).

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 2))
    >>> round(frechet_distance(x, x + [3.0, 0.0]), 6)
    9.0
    """
    from scipy import linalg

    a, b = check_samples(x, y)
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False, ddof=1), np.cov(b, rowvar=False, ddof=1)
    sa, sb = np.atleast_2d(sa), np.atleast_2d(sb)
    root = linalg.sqrtm(sa @ sb)
    root = np.real(root)  # round-off gives tiny imaginary parts
    return float(mu @ mu + np.trace(sa + sb - 2 * root))
