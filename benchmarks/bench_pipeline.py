"""The demo study end to end, as a user runs it: seconds, runs per second, peak memory.

    python benchmarks/bench_pipeline.py

Runs ``shiftlab demo`` into a fresh store (through :func:`bench_demo.timed`) and reads the
design table it wrote. The paper-scale toyworld study (``demo --scale paper``, issue 4) is
not implemented yet, so ``paper_scale_toyworld_seconds`` is not printed.
"""

from __future__ import annotations

import resource
import sys
import tempfile
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from bench_demo import timed


def main() -> int:
    exe = str(Path(sys.executable).with_name("shiftlab"))
    with tempfile.TemporaryDirectory() as root:
        store = Path(root) / "demo"
        seconds = timed([exe, "demo", "--out", str(store), "--no-progress"])
        design = pl.read_parquet(store / "tables" / "runs.parquet")
    n_runs = design["run_id"].drop_nulls().n_unique()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"demo: {seconds:.1f} s, {n_runs} distinct runs, {design.height} design rows")
    print(f"runs_per_second={n_runs / seconds:.3f}")
    print(f"peak_memory_mb={peak:.0f}")
    print(f"demo_seconds={seconds:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
