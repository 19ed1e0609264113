"""The sign-flip test over organisms and the interval that inverts it."""

import itertools

import numpy as np
import pytest

from shiftlab.attribution import sign_flip, smallest_p
from shiftlab.attribution._inference import EXACT_UP_TO


def _brute_p(d, mu=0.0):
    x = np.asarray(d) - mu
    patterns = np.array(list(itertools.product([-1, 1], repeat=len(x))))
    return np.mean(np.abs(patterns @ x) >= abs(x.sum()) - 1e-12)


@pytest.mark.parametrize("g", [3, 6, 8])
def test_the_p_value_counts_every_sign_pattern(g):
    d = np.random.default_rng(g).normal(0.1, 0.2, g)
    test = sign_flip(d)
    assert test.p_value == pytest.approx(_brute_p(d))
    assert test.exact and test.p_min == 2 / 2**g <= test.p_value <= 1


@pytest.mark.parametrize("seed", range(4))
def test_the_interval_is_every_mean_the_test_does_not_reject(seed):
    d = np.random.default_rng(seed).normal(0.0, 0.3, 7)
    test = sign_flip(d, bounds=(-10, 10))
    eps = 1e-7
    assert _brute_p(d, test.ci_low + eps) > 0.05 >= _brute_p(d, test.ci_low - eps)
    assert _brute_p(d, test.ci_high - eps) > 0.05 >= _brute_p(d, test.ci_high + eps)
    # It excludes 0 exactly when the test rejects at 5%.
    assert (test.ci_low > 0 or test.ci_high < 0) == (test.p_value <= 0.05)


def test_few_organisms_get_the_whole_range_and_p_is_never_zero():
    for g in range(1, 6):
        test = sign_flip([-0.3] * g)
        assert (test.ci_low, test.ci_high) == (-1.0, 1.0)
        assert test.p_value == test.p_min == smallest_p(g) > 0.05
    # Identical differences: the se is zero, not rounding residue, and p is the minimum.
    same = sign_flip([0.1 + 0.2] * 8)
    assert same.se == 0.0 and same.p_value == 2 / 2**8
    assert same.ci_low == pytest.approx(0.3) and same.ci_high == pytest.approx(0.3)
    nothing = sign_flip([0.0] * 8)
    assert nothing.p_value == 1.0


def test_beyond_the_exact_limit_monte_carlo_counts_the_data_itself():
    g = EXACT_UP_TO + 4
    d = np.random.default_rng(0).normal(0.5, 0.1, g)  # every organism moved up
    test = sign_flip(d, n_resamples=999)
    assert not test.exact and test.p_value == test.p_min == 1 / 1000
    assert -1 <= test.ci_low < d.mean() < test.ci_high <= 1
    assert sign_flip(d, n_resamples=999).ci_low == test.ci_low  # seeded


def test_bad_input_is_an_error():
    for bad in ([], [np.nan, 0.1], [[0.1, 0.2]]):
        with pytest.raises(ValueError, match="finite differences"):
            sign_flip(bad)
