"""Kernel two-sample tests: the unbiased MMD² with a permutation p-value.

The kernel matrix of the pooled sample is computed once in float32, block of rows by block
of rows, and every permutation's statistic comes out of one matrix product with the matrix
of permuted labels, so B permutations cost one (n + m) x (n + m) x (B + 1) GEMM: with the
kernel's own GEMM that is the test's FLOP floor, and little else is spent (in-place
elementwise passes, labels shuffled by numpy in C, quadratic forms summed in float64).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shiftlab.errors import ShiftlabError

# Kernel rows computed at once: bounds the working memory to about rows x n x 4 bytes.
_ROW_BYTES = 1 << 28
KERNELS = ("rbf", "energy", "rff")


@dataclass(frozen=True)
class MMDResult:
    """An MMD permutation test: the unbiased MMD² (``statistic``), the permutation
    ``p_value`` = (1 + #{T_b >= T}) / (1 + B), the RBF ``bandwidth`` (sigma) and the number
    of permutations B."""

    statistic: float
    p_value: float
    bandwidth: float
    n_permutations: int


def _as_matrix(values: Any, name: str) -> torch.Tensor:
    array = torch.as_tensor(np.asarray(values, dtype=np.float32))
    if array.ndim != 2:
        raise ShiftlabError(
            f"{name}: expected a 2-D array (samples x features), got {array.ndim}-D"
        )
    if array.shape[0] < 2:
        raise ShiftlabError(
            f"{name}: a two-sample test needs at least 2 samples, got {array.shape[0]}"
        )
    if not torch.isfinite(array).all():
        raise ShiftlabError(f"{name}: contains NaN or infinite values")
    return array


def median_bandwidth(z: torch.Tensor, *, max_points: int = 2000, seed: int = 0) -> float:
    """sigma = sqrt(median(||a - b||²) / 2) over pairs of (at most ``max_points`` of) the
    pooled sample: the median heuristic. Pairs of duplicates (identical rows) are left out:
    they carry no scale, and self-generated texts repeat often enough to push a plain median
    to zero. Distances come from one float32 Gram matrix (relative error ~1e-7 at the
    median's scale, far below what a bandwidth heuristic resolves)."""
    if z.shape[0] > max_points:
        generator = torch.Generator().manual_seed(seed)
        z = z[torch.randperm(z.shape[0], generator=generator)[:max_points]]
    z = z.float()
    squared = (z * z).sum(1)
    d2 = torch.addmm(squared[None, :], z, z.T, alpha=-2).add_(squared[:, None]).clamp_min_(0)
    # Identical rows share an id: exact, where a threshold on float32 distances is not.
    ids = torch.unique(z, dim=0, return_inverse=True)[1].numpy()
    values = d2.cpu().numpy()
    if len(np.unique(ids)) < len(ids):
        values[ids[:, None] == ids[None, :]] = np.inf
    else:
        np.fill_diagonal(values, np.inf)
    # Every pair appears twice (i, j and j, i): the lower median of the pairs is entry
    # 2 * ((pairs - 1) // 2) of the sorted doubled list, found by a linear-time partition.
    pairs = int(np.isfinite(values).sum()) // 2
    if pairs == 0:
        raise ShiftlabError("all samples are identical: the median bandwidth is zero")
    k = 2 * ((pairs - 1) // 2)
    return math.sqrt(float(np.partition(values.reshape(-1), k)[k]) / 2)


def _labels(
    n: int, m: int, n_permutations: int, groups: np.ndarray | None, seed: int
) -> torch.Tensor:
    """Row 0: the observed assignment (1 = first sample); then one row per permutation,
    shuffled across the pool or within each group. Rows (not columns), so each shuffle
    walks contiguous memory and the products read each assignment contiguously."""
    generator = np.random.default_rng(seed)
    observed = np.concatenate([np.ones(n), np.zeros(m)]).astype(np.float32)
    rows = np.empty((n_permutations + 1, n + m), dtype=np.float32)
    rows[0] = observed
    if groups is None:
        # A permutation of the pool only decides which n samples play x: the n smallest of
        # n + m i.i.d. uniform keys are a uniform n-subset. A linear-time partition per row
        # finds them (about half the time of a full Fisher-Yates shuffle).
        keys = generator.random((n_permutations, n + m))
        threshold = np.partition(keys, n - 1, axis=1)[:, n - 1 : n]
        np.less_equal(keys, threshold, out=rows[1:], casting="unsafe")
        tied = np.flatnonzero(rows[1:].sum(1) != n)  # equal float64 keys: ~1e-9 per row
        for row in tied + 1:
            rows[row] = generator.permutation(observed)
        return torch.from_numpy(rows)
    # Sorting (group rank + a uniform key) per row lists each group's members together in
    # random order: entry j of ``order`` is a random member of the group whose members
    # ``slots[j]`` also walks through, so each row is a uniform within-group shuffle.
    rank = np.unique(groups, return_inverse=True)[1]
    slots = np.argsort(rank, kind="stable")
    order = np.argsort(rank[None, :] + generator.random((n_permutations, n + m)), axis=1)
    rows[1:, slots] = observed[order]
    return torch.from_numpy(rows)


def _check_groups(groups: Any, n: int, m: int) -> np.ndarray:
    array = np.asarray(groups)
    if array.shape != (n + m,):
        raise ShiftlabError(
            f"groups: expected one group per sample of x then y ({n + m}), got shape {array.shape}"
        )
    in_x = set(array[:n].tolist())
    in_y = set(array[n:].tolist())
    unpaired = sorted(in_x ^ in_y, key=str)
    if unpaired:
        raise ShiftlabError(
            f"groups: {len(unpaired)} group(s) have members in only one sample (e.g. "
            f"{unpaired[0]!r}); paired permutations need both samples in every group"
        )
    return array


def mmd_test(
    x: Any,
    y: Any,
    *,
    kernel: str = "rbf",
    bandwidth: float | str = "median",
    n_permutations: int = 1000,
    paired: bool = False,
    groups: Sequence[Any] | None = None,
    seed: int = 0,
    device: str | None = None,
    n_features: int = 1024,
) -> MMDResult:
    """Permutation test of "x and y come from one distribution" with the unbiased MMD².

    ``kernel``: ``rbf``, k(a, b) = exp(-||a - b||² / (2 sigma²)) with sigma the median
    heuristic or a given ``bandwidth``; or ``energy``, k(a, b) = -||a - b||, for which the
    statistic is the (unbiased) energy distance and the bandwidth is unused (reported as
    0); or ``rff``, the RBF kernel approximated by ``n_features`` random Fourier features,
    linear in the sample size (for large samples). ``paired=True`` swaps labels only within each
    group (``groups``: one id per row of x then y; by default x[i] pairs with y[i]).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x, y, z = rng.normal(size=(60, 3)), rng.normal(size=(60, 3)), rng.normal(1, size=(60, 3))
    >>> same, shifted = mmd_test(x, y), mmd_test(x, z)
    >>> same.p_value > 0.05, shifted.p_value < 0.01
    (True, True)
    """
    if kernel not in KERNELS:
        raise ShiftlabError(f"kernel: expected one of {KERNELS}, got {kernel!r}")
    if n_permutations < 1:
        raise ShiftlabError(f"n_permutations: must be at least 1, got {n_permutations}")
    a, b = _as_matrix(x, "x"), _as_matrix(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ShiftlabError(f"x has {a.shape[1]} features but y has {b.shape[1]}")
    n, m = a.shape[0], b.shape[0]
    group_ids: np.ndarray | None = None
    if paired:
        if groups is None:
            if n != m:
                raise ShiftlabError(f"paired samples must be the same size (x {n}, y {m})")
            groups = [*range(n), *range(m)]
        group_ids = _check_groups(groups, n, m)
    elif groups is not None:
        raise ShiftlabError("groups are used by paired tests only; pass paired=True")
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    z = torch.cat([a, b]).to(target)
    if n_features < 1:
        raise ShiftlabError(f"n_features: must be at least 1, got {n_features}")
    if kernel == "energy":
        sigma = 0.0
    elif bandwidth == "median":
        sigma = median_bandwidth(z.cpu(), seed=seed)
    elif isinstance(bandwidth, (int, float)) and bandwidth > 0:
        sigma = float(bandwidth)
    else:
        raise ShiftlabError(f"bandwidth: expected 'median' or a positive number, got {bandwidth!r}")
    labels = _labels(n, m, n_permutations, group_ids, seed).to(target)
    if kernel == "rff":
        quadratic, row_sums, diagonal = _feature_products(z, labels, sigma, n_features, seed)
    else:
        quadratic, row_sums, diagonal = _kernel_products(z, labels, kernel, sigma)
    statistics = _unbiased(quadratic, labels.double(), row_sums, diagonal, n, m)
    observed = statistics[0]
    # Permutations that swap only identical rows (or mirror x and y) reproduce the observed
    # statistic up to the float32 rounding of the kernel; such ties count as exceedances,
    # or rounding would shrink the p-value. The kernel's scale sets the rounding's.
    scale = max(float(diagonal.abs().max()), float(row_sums.abs().max()) / (n + m))
    tolerance = 1e-6 * scale
    exceed = int((statistics[1:] >= observed - tolerance).sum())
    return MMDResult(
        statistic=float(observed),
        p_value=(1 + exceed) / (1 + n_permutations),
        bandwidth=sigma,
        n_permutations=n_permutations,
    )


def _kernel_products(
    z: torch.Tensor, labels: torch.Tensor, kernel: str, sigma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a_b^T K a_b for every label row b, K's row sums, K's diagonal as computed),
    streaming K by row blocks. Each block is one GEMM into a fresh buffer, then in-place
    elementwise passes, then one GEMM against every label row at once. The diagonal is read
    back rather than assumed (1 for RBF, 0 for energy): float rounding leaves it slightly
    off, and the unbiased sums must drop exactly what they added."""
    total = z.shape[0]
    rows = max(1, _ROW_BYTES // (4 * total))
    squared = (z * z).sum(1)
    quadratic = torch.zeros(labels.shape[0], dtype=torch.float64, device=z.device)
    row_sums = torch.empty(total, dtype=torch.float64, device=z.device)
    diagonal = torch.empty(total, dtype=torch.float64, device=z.device)
    if kernel == "rbf":
        # -||a - b||² / (2 sigma²) = (a.b) / sigma² - |a|² / (2 sigma²) - |b|² / (2 sigma²)
        half = squared * (-0.5 / (sigma * sigma))
    for start in range(0, total, rows):
        block = slice(start, start + rows)
        if kernel == "rbf":
            k = torch.addmm(half[None, :], z[block], z.T, alpha=1.0 / (sigma * sigma))
            k.add_(half[block, None]).clamp_max_(0).exp_()
        else:
            k = torch.addmm(squared[None, :], z[block], z.T, alpha=-2.0)
            k.add_(squared[block, None]).clamp_min_(0).sqrt_().neg_()
        diagonal[block] = k.diagonal(offset=start)
        # A row's entries share one sign (nothing cancels), so torch's cascaded float32 sum
        # is good to a few ulps, as fine as the float32 entries themselves, and 30x faster
        # than widening every entry to float64.
        row_sums[block] = k.sum(1)
        # (labels x K[:, block]) by symmetry, as labels @ k^T: MKL runs this orientation
        # about 1.4x faster than k @ labels^T.
        products = labels @ k.T
        del k
        quadratic += products.mul_(labels[:, block]).sum(1, dtype=torch.float64)
    return quadratic, row_sums, diagonal


def _feature_products(
    z: torch.Tensor, labels: torch.Tensor, sigma: float, n_features: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a_b^T K a_b, K's row sums, K's diagonal) for K = Phi Phi^T, Phi the random Fourier
    features of the RBF kernel: sqrt(2/D) cos(z W / sigma + u), W ~ N(0, 1), u ~ U(0, 2 pi)."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(z.shape[1], n_features, generator=generator).to(z.device) / sigma
    phase = (torch.rand(n_features, generator=generator) * 2 * math.pi).to(z.device)
    projected = torch.zeros(n_features, labels.shape[0], dtype=torch.float64, device=z.device)
    column_sums = torch.zeros(n_features, dtype=torch.float64, device=z.device)
    rows = max(1, _ROW_BYTES // (4 * n_features))
    blocks = []
    for start in range(0, z.shape[0], rows):
        phi = torch.cos(z[start : start + rows] @ weights + phase) * math.sqrt(2 / n_features)
        projected += (phi.T @ labels[:, start : start + rows].T).double()
        column_sums += phi.sum(0, dtype=torch.float64)
        blocks.append(phi)
    row_sums = torch.cat([phi.double() @ column_sums for phi in blocks])
    diagonal = torch.cat([phi.double().pow(2).sum(1) for phi in blocks])
    return projected.pow(2).sum(0), row_sums, diagonal


def _unbiased(
    quadratic: torch.Tensor,
    labels: torch.Tensor,
    row_sums: torch.Tensor,
    diagonal: torch.Tensor,
    n: int,
    m: int,
) -> torch.Tensor:
    """Unbiased MMD² per label row (``labels``: assignments x samples) from q = a^T K a,
    t = a^T K 1 and 1^T K 1; the sums over i != j drop the kernel's ``diagonal``."""
    label_row_sums, total = labels @ row_sums, float(row_sums.sum())
    diagonal_x, diagonal_total = labels @ diagonal, float(diagonal.sum())
    within_x = quadratic - diagonal_x
    within_y = total - 2 * label_row_sums + quadratic - (diagonal_total - diagonal_x)
    across = label_row_sums - quadratic
    return within_x / (n * (n - 1)) + within_y / (m * (m - 1)) - 2 * across / (n * m)
