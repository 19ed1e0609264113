"""Organism-level inference: the sign-flip (randomisation) test of a mean paired
difference, the confidence interval that inverts it, and what G organisms can resolve.

Under the null that organisms' paired differences are symmetric about ``mu``, every
pattern of signs applied to ``d - mu`` is as likely as the one observed. The test counts
the patterns whose mean is at least as far from 0 as the observed one: exactly over all
2^G patterns up to :data:`EXACT_UP_TO` organisms, over random patterns (plus the observed
one, so p = (1 + #) / (1 + B)) beyond. The interval is every ``mu`` the test does not
reject at 5%, so it agrees with the p-value, and it is clipped to the parameter's range:
with G <= 5 organisms no pattern count can reach 5%, and the interval is that whole range.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

# Up to 16 organisms every sign pattern is enumerated (65,536 rows).
EXACT_UP_TO = 16
N_RESAMPLES = 9999
# A standard error below this is floating-point residue of identical values: zero.
ZERO_SE = 1e-12
RATE_DIFFERENCE = (-1.0, 1.0)
# With G organisms the smallest two-sided sign-flip p is 2 / 2^G: 0.031 at G = 6, 0.0625
# at G = 5, so fewer than 6 organisms cannot exclude 0 at the 5% level.
MIN_ORGANISMS = 6


@dataclass(frozen=True)
class SignFlip:
    """A mean over organisms with its sign-flip p-value and inverted 95% interval.

    ``p_min`` is the smallest p-value the test can give with ``n`` organisms (2 / 2^G
    exactly, 1 / (1 + B) by Monte Carlo); ``se`` is the standard error of the mean
    (None with one organism, 0 below :data:`ZERO_SE`); ``exact`` says whether every sign
    pattern was enumerated.
    """

    estimate: float
    se: float | None
    ci_low: float
    ci_high: float
    p_value: float
    p_min: float
    n: int
    exact: bool

    def as_row(self) -> dict[str, float | int | None]:
        """The columns of the estimate frame (``n_clusters`` = organisms)."""
        row = asdict(self)
        del row["exact"]
        return row | {"n_clusters": self.n}


def exact_smallest_p(n: int) -> float:
    """The smallest two-sided p-value of an exact test over ``n`` signs (every sign
    pattern, or a binomial sign test of n moved organisms): 2 / 2^n.

    >>> exact_smallest_p(1), exact_smallest_p(5)
    (1.0, 0.0625)
    """
    return min(1.0, 2 / 2**n)


def smallest_p(n_organisms: int, n_resamples: int = N_RESAMPLES) -> float:
    """The smallest two-sided p-value a sign-flip test over ``n_organisms`` can give:
    exact up to :data:`EXACT_UP_TO` organisms, then 1 / (1 + B) by Monte Carlo.

    >>> smallest_p(2), smallest_p(6), smallest_p(30)
    (0.5, 0.03125, 0.0001)
    """
    if n_organisms > EXACT_UP_TO:
        return 1 / (1 + n_resamples)
    return exact_smallest_p(n_organisms)


@functools.lru_cache(maxsize=32)
def _patterns(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """Sign patterns as rows: all 2^n, or the identity and ``n_resamples`` random ones."""
    if n <= EXACT_UP_TO:
        codes = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n)
        return (1 - 2 * (codes & 1)).astype(float)
    rng = np.random.default_rng([seed, n])
    random = rng.choice(np.array([-1.0, 1.0]), size=(n_resamples, n))
    return np.vstack([np.ones((1, n)), random])


def sign_flip(
    differences: Sequence[float] | np.ndarray,
    *,
    bounds: tuple[float, float] = RATE_DIFFERENCE,
    alpha: float = 0.05,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> SignFlip:
    """The sign-flip test that the organisms' mean paired difference is 0, and the
    interval of means it does not reject at level ``alpha``, clipped to ``bounds``.

    >>> test = sign_flip([-0.2, -0.1, -0.3, -0.2, -0.25, -0.15])
    >>> round(test.estimate, 3), test.p_value, test.p_min
    (-0.2, 0.03125, 0.03125)
    >>> round(test.ci_low, 3), round(test.ci_high, 3)  # the most extreme organisms
    (-0.3, -0.1)
    >>> two = sign_flip([-0.2, -0.2])  # two organisms cannot exclude anything
    >>> (two.ci_low, two.ci_high, two.p_value, two.se)
    (-1.0, 1.0, 0.5, 0.0)
    """
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or not len(d) or not np.isfinite(d).all():
        raise ValueError(f"sign_flip needs finite differences, one per organism; got {d!r}")
    g = len(d)
    estimate = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(g)) if g > 1 else None
    if se is not None and se < ZERO_SE:
        se = 0.0
    signs = _patterns(g, n_resamples, seed)
    flipped = signs @ d
    total = float(d.sum())
    # Ties count as extreme; a flipped sum differs from an equal one by rounding only.
    tolerance = 1e-9 * float(np.abs(d).sum())
    p_value = float(np.mean(np.abs(flipped) >= abs(total) - tolerance))
    low, high = _inverted_interval(signs, flipped, total, g, alpha)
    return SignFlip(
        estimate=estimate,
        se=se,
        ci_low=max(bounds[0], min(low, estimate)),
        ci_high=min(bounds[1], max(high, estimate)),
        p_value=p_value,
        p_min=smallest_p(g, n_resamples),
        n=g,
        exact=g <= EXACT_UP_TO,
    )


def _inverted_interval(
    signs: np.ndarray, flipped: np.ndarray, total: float, g: int, alpha: float
) -> tuple[float, float]:
    """Every mu at which more than ``alpha`` of the patterns are as extreme as the data.

    A pattern s with a = s.d and b = sum(s) is as extreme at mu when
    |a - mu b| >= |A - mu G| (A = sum(d)): a concave quadratic in mu whose roots
    (A - a) / (G - b) and (A + a) / (G + b) bracket the mean A / G; the all-plus and
    all-minus patterns count at every mu. So the patterns counting at mu only fall away
    as mu leaves the mean, and the bounds are the m-th outermost roots.
    """
    counts = signs.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where(counts == g, np.nan, (total - flipped) / (g - counts))
        second = np.where(counts == -g, np.nan, (total + flipped) / (g + counts))
    unbounded = np.isnan(first) | np.isnan(second)
    lows = np.where(unbounded, -np.inf, np.fmin(first, second))
    highs = np.where(unbounded, np.inf, np.fmax(first, second))
    needed = math.floor(alpha * len(signs)) + 1  # patterns that must count to accept mu
    if needed > len(signs):
        return -math.inf, math.inf
    low = float(np.partition(lows, needed - 1)[needed - 1])
    high = float(-np.partition(-highs, needed - 1)[needed - 1])
    return low, high
