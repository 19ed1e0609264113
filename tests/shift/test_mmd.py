"""mmd_test: the unbiased statistic, calibrated permutation p-values, power, bad input."""

import numpy as np
import pytest
from scipy import stats

from shiftlab.errors import ShiftlabError
from shiftlab.shift import median_bandwidth, mmd_test


def reference_mmd2(x, y, sigma):
    """The unbiased MMD² written out pair by pair, in float64."""

    def k(a, b):
        return np.exp(-((a - b) ** 2).sum() / (2 * sigma**2))

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


@pytest.mark.parametrize(("n", "m", "shift"), [(12, 12, 0.0), (9, 15, 0.7), (20, 6, 2.0)])
def test_statistic_matches_the_direct_reference(n, m, shift):
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, 4)), rng.normal(shift, size=(m, 4))
    result = mmd_test(x, y, bandwidth=1.3, n_permutations=10)
    assert result.statistic == pytest.approx(reference_mmd2(x, y, 1.3), abs=1e-6)
    assert result.bandwidth == 1.3


def test_p_value_is_the_permutation_formula_and_seeded():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(15, 3)), rng.normal(size=(15, 3))
    a = mmd_test(x, y, n_permutations=99, seed=3)
    assert a == mmd_test(x, y, n_permutations=99, seed=3)
    assert (a.p_value * 100) == pytest.approx(round(a.p_value * 100))  # (1 + k) / 100
    assert a.n_permutations == 99 and 0.01 <= a.p_value <= 1.0


def test_the_median_bandwidth():
    import torch

    z = torch.tensor([[0.0], [1.0], [3.0]])  # squared distances 1, 9, 4: median 4
    assert median_bandwidth(z) == pytest.approx(np.sqrt(2))
    # Duplicates carry no scale: four zero distances would otherwise be the median.
    repeated = torch.tensor([[0.0], [0.0], [0.0], [1.0], [3.0]])
    assert median_bandwidth(repeated) == pytest.approx(np.sqrt(2))


def _null_p_values(replicates, paired):
    rng = np.random.default_rng(7 if paired else 8)
    out = []
    for r in range(replicates):
        if paired:  # a shared per-prompt effect: samples differ only by exchangeable noise
            base = rng.normal(size=(25, 3)) * 2
            x, y = base + rng.normal(size=(25, 3)), base + rng.normal(size=(25, 3))
        else:
            x, y = rng.normal(size=(25, 3)), rng.normal(size=(30, 3))
        out.append(mmd_test(x, y, n_permutations=199, paired=paired, seed=r).p_value)
    return np.array(out)


@pytest.mark.parametrize("paired", [False, True])
def test_null_p_values_are_uniform(paired):
    p = _null_p_values(300, paired)
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert 0.02 <= (p <= 0.05).mean() <= 0.08


def test_power_rises_with_the_effect_size():
    rng = np.random.default_rng(11)
    power = []
    for shift in (0.0, 0.3, 0.6, 1.0):
        hits = [
            mmd_test(rng.normal(size=(30, 3)), rng.normal(shift, size=(30, 3)),
                     n_permutations=99, seed=r).p_value <= 0.05
            for r in range(40)
        ]  # fmt: skip
        power.append(np.mean(hits))
    assert power == sorted(power) and power[0] <= 0.15 and power[-1] >= 0.9


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "message"),
    [
        (np.zeros((5, 3)), np.zeros((5, 4)), {}, "x has 3 features but y has 4"),
        (np.zeros((1, 3)), np.zeros((5, 3)), {}, "at least 2 samples"),
        (np.full((5, 3), np.nan), np.zeros((5, 3)), {}, "NaN or infinite"),
        (np.zeros((5,)), np.zeros((5, 3)), {}, "2-D array"),
        (np.eye(4), np.eye(4), {"paired": True, "groups": [0, 1, 2, 3, 0, 1, 2, 9]},
         "only one sample"),
        (np.eye(4), np.eye(4)[:3], {"paired": True}, "the same size"),
        (np.eye(4), np.eye(4), {"groups": [0] * 8}, "pass paired=True"),
        (np.eye(4), np.eye(4), {"bandwidth": -1.0}, "bandwidth"),
        (np.zeros((4, 2)), np.zeros((4, 2)), {}, "identical"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_error(x, y, kwargs, message):
    with pytest.raises(ShiftlabError, match=message):
        mmd_test(x, y, n_permutations=5, **kwargs)


def test_energy_kernel_gives_the_unbiased_energy_distance():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(10, 3)), rng.normal(0.5, size=(14, 3))

    def mean_distance(a, b, same):
        d = np.linalg.norm(a[:, None] - b[None], axis=-1)
        return d.sum() / (len(a) * (len(a) - 1)) if same else d.mean()

    expected = (
        2 * mean_distance(x, y, False) - mean_distance(x, x, True) - mean_distance(y, y, True)
    )
    result = mmd_test(x, y, kernel="energy", n_permutations=20)
    assert result.statistic == pytest.approx(expected, abs=1e-5) and result.bandwidth == 0.0


def test_centroid_and_frechet_distances():
    from shiftlab.shift import centroid_cosine_distance, frechet_distance

    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 3))
    x -= x.mean(0)  # so scaling moves only the covariance
    assert centroid_cosine_distance(x + 5, x + 5) == pytest.approx(0.0, abs=1e-12)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x * 2) == pytest.approx(np.trace(np.cov(x.T)), rel=1e-6)
    with pytest.raises(ShiftlabError, match="NaN"):
        frechet_distance(x, np.full((4, 3), np.inf))


def test_random_fourier_features_approximate_the_rbf_statistic():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(150, 4)), rng.normal(0.8, size=(150, 4))
    exact = mmd_test(x, y, bandwidth=2.0, n_permutations=50)
    approx = mmd_test(x, y, kernel="rff", bandwidth=2.0, n_features=8192, n_permutations=50)
    assert approx.statistic == pytest.approx(exact.statistic, rel=0.1)
    assert approx.p_value <= 0.05 and exact.p_value <= 0.05
    null = [
        mmd_test(rng.normal(size=(30, 2)), rng.normal(size=(30, 2)), kernel="rff",
                 n_permutations=99, seed=r).p_value
        for r in range(200)
    ]  # fmt: skip
    assert 0.02 <= np.mean(np.array(null) <= 0.05) <= 0.08


def test_classifier_test_finds_shift_and_lists_the_shifted_rows():
    from shiftlab.shift import classifier_test

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(120, 4)), rng.normal(size=(120, 4))
    y[:10] += 4.0  # ten rows moved far away
    result = classifier_test(x, y, n_most_shifted=10)
    assert set(result.most_shifted) == set(range(10))
    null = classifier_test(x, rng.normal(size=(120, 4)))
    assert null.p_value > 0.01 and 0.35 < null.auc < 0.65
    groups = [*range(120), *range(120)]
    grouped = classifier_test(x, y, groups=groups)
    assert grouped.auc > 0.5
    with pytest.raises(ShiftlabError, match="groups: expected one group per row"):
        classifier_test(x, y, groups=[0, 1])


def test_permutations_that_only_swap_identical_pairs_are_ties():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 4))
    y = x.copy()
    y[0] += 5.0  # one pair differs; swapping it mirrors the samples, which MMD² ignores
    result = mmd_test(x, y, paired=True, n_permutations=200)
    assert result.p_value == 1.0


def _float64_statistics(z, labels, sigma, n, m):
    """Every assignment's unbiased MMD² from a float64 kernel, straight from the definition."""
    z = z.astype(np.float64)
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * sigma**2))
    np.fill_diagonal(k, 0.0)  # the unbiased sums leave i == j out
    x = labels.astype(np.float64)
    y = 1 - x
    xx, yy, xy = ((x @ k) * x).sum(1), ((y @ k) * y).sum(1), ((x @ k) * y).sum(1)
    return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * xy / (n * m)


@pytest.mark.parametrize("paired", [False, True])
def test_every_permutation_statistic_matches_float64(paired):
    """The float32 kernel and the one GEMM over all assignments give every permutation's
    statistic to 1e-6 of the float64 value: the kernel's entries (<= 1) carry relative
    rounding ~1e-7 and each quadratic form's float32 sums over N = n + m terms lose about
    sqrt(N) ulps, which the 1 / n² normalisation leaves orders of magnitude below 1e-6."""
    import torch

    from shiftlab.shift._mmd import _kernel_products, _labels, _unbiased

    rng = np.random.default_rng(12)
    n, m = (150, 150) if paired else (160, 130)
    x, y = rng.normal(size=(n, 24)), rng.normal(0.1, size=(m, 24))
    z = np.concatenate([x, y])
    groups = np.array([*range(n), *range(m)]) if paired else None
    labels = _labels(n, m, 300, groups, seed=4)
    counts = labels.sum(1)
    assert bool((counts == n).all())  # every assignment puts n samples in x
    if paired:  # and each pair keeps one member on each side
        assert bool((labels[:, :n] + labels[:, n:] == 1).all())
    sigma = 4.0
    quadratic, row_sums, diagonal = _kernel_products(
        torch.from_numpy(z.astype(np.float32)), labels, "rbf", sigma
    )
    ours = _unbiased(quadratic, labels.double(), row_sums, diagonal, n, m).numpy()
    expected = _float64_statistics(z, labels.numpy(), sigma, n, m)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    result = mmd_test(x, y, bandwidth=sigma, n_permutations=300, seed=4, paired=paired)
    assert result.statistic == pytest.approx(expected[0], abs=1e-6)
    # A permutation p-value: (1 + #{T_b >= T}) / (1 + B), never 0. Statistics within the
    # rounding tolerance of the observed one may count either way.
    low = (1 + (expected[1:] >= expected[0] + 1e-6).sum()) / 301
    high = (1 + (expected[1:] >= expected[0] - 1e-6).sum()) / 301
    assert low <= result.p_value <= high and result.p_value >= 1 / 301


def test_unpaired_permutations_are_uniform_subsets():
    from shiftlab.shift._mmd import _labels

    labels = _labels(3, 2, 20000, None, seed=0).numpy()
    assert (labels[0] == [1, 1, 1, 0, 0]).all() and (labels.sum(1) == 3).all()
    # Each of the C(5, 3) = 10 subsets is drawn with probability 1/10.
    _, counts = np.unique(labels[1:], axis=0, return_counts=True)
    assert len(counts) == 10
    assert stats.chisquare(counts).pvalue > 1e-4
