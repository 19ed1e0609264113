"""Time the default demo study end to end: seconds, runs per second, peak memory.

    python benchmarks/bench_pipeline.py [--keep STORE]

Runs ``shiftlab demo``'s spec into a fresh store (a fresh cache of toyworld weights is not
forced: the shipped weights are what users get) and prints one line per phase plus the
totals. The paper-scale toyworld study (``demo --scale paper``) is not implemented yet, so
its line is not printed.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from importlib import resources

import yaml


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", help="write the store here instead of a temporary folder")
    args = parser.parse_args()

    from shiftlab.pipeline import run_study
    from shiftlab.spec import parse_spec
    from shiftlab.store import Store

    text = resources.files("shiftlab").joinpath("specs/demo.yaml").read_text()
    spec = parse_spec(yaml.safe_load(text), "demo.yaml")
    folder = args.keep or tempfile.mkdtemp(prefix="shiftlab-bench-")
    start = time.perf_counter()
    design = run_study(spec, Store.open(folder), progress=False)
    seconds = time.perf_counter() - start
    n_runs = design["run_id"].n_unique() - int(design["run_id"].null_count() > 0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"demo: {seconds:.1f} s, {n_runs} distinct runs, {design.height} design rows")
    print(f"runs_per_second={n_runs / seconds:.3f}")
    print(f"peak_memory_mb={peak:.0f}")
    print(f"demo_seconds={seconds:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
