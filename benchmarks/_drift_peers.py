"""Runs alibi-detect's and frouros' MMD tests inside the peer virtual environment.

Called by ``bench_shift.py`` with the peer venv's Python (alibi-detect and frouros pin
old numpy, scipy and transformers, so they never share shiftlab's environment):

    python _drift_peers.py DATA.npz SIGMA N_PERMUTATIONS FROUROS_PERMUTATIONS

Prints one JSON object: each library's statistic, p-value and seconds.
"""

from __future__ import annotations

import functools
import json
import sys
import time

import numpy as np


def alibi(x: np.ndarray, y: np.ndarray, sigma: float, n_permutations: int) -> dict:
    from alibi_detect.cd import MMDDrift

    start = time.perf_counter()
    detector = MMDDrift(
        x,
        backend="pytorch",
        p_val=0.05,
        sigma=np.array([sigma], dtype=np.float32),
        n_permutations=n_permutations,
        device="cpu",
    )
    prediction = detector.predict(y)["data"]
    seconds = time.perf_counter() - start
    return {"statistic": float(prediction["distance"]), "p_value": float(prediction["p_val"]),
            "seconds": seconds}  # fmt: skip


def frouros(x: np.ndarray, y: np.ndarray, sigma: float, n_permutations: int) -> dict:
    from frouros.callbacks import PermutationTestDistanceBased
    from frouros.detectors.data_drift import MMD
    from frouros.utils.kernels import rbf_kernel

    kernel = functools.partial(rbf_kernel, sigma=sigma)
    plain = MMD(kernel=kernel)
    plain.fit(x)
    start = time.perf_counter()
    statistic = plain.compare(y)[0].distance
    statistic_seconds = time.perf_counter() - start
    test = MMD(
        kernel=kernel,
        callbacks=[
            PermutationTestDistanceBased(
                num_permutations=n_permutations, random_state=0, num_jobs=1, name="permutations"
            )
        ],
    )
    test.fit(x)
    start = time.perf_counter()
    _, logs = test.compare(y)
    seconds = time.perf_counter() - start
    return {
        "statistic": float(statistic),
        "statistic_seconds": statistic_seconds,
        "p_value": float(logs["permutations"]["p_value"]),
        "n_permutations": n_permutations,
        "seconds": seconds,
        "seconds_per_permutation": seconds / n_permutations,
    }


def main() -> None:
    path, sigma, n_permutations, frouros_permutations = sys.argv[1:5]
    data = np.load(path)
    x, y = data["x"], data["y"]
    out = {
        "alibi": alibi(x, y, float(sigma), int(n_permutations)),
        "frouros": frouros(x, y, float(sigma), int(frouros_permutations)),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
