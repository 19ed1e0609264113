"""Whole studies end to end, as a user runs them: seconds, runs per second, peak memory.

    python benchmarks/bench_pipeline.py [--skip-paper] [--executor ray] [--keep DIR]

Runs ``shiftlab demo`` and then ``shiftlab demo --scale paper`` (108 organisms, all nine
methods, every arm) into fresh stores, through :func:`bench_demo.timed`, and reads the
design tables they wrote. The toyworld bases that the paper spec names are built into the
cache before its timer starts (from their shipped weights, or by their recipe where those
are stale), as a download would be; that time is printed as ``zoo_seconds``. Last line:
``paper_scale_toyworld_seconds=<s>`` (target: at most 600 s on a 2-core machine). Each
study also prints its workers' seconds by stage (organisms, pools, runs, samples, shift),
read from the store's build log.

With ``--executor ray`` each study runs twice in the same session, on the local executor
in its sequential form (``--workers 1``: one process, in order) and as Ray tasks on a
local Ray cluster with every core; last line ``ray_vs_local_speedup=<x>`` (runs per
second of Ray over local, on the largest scale timed). With ``--keep DIR`` the stores are
written under ``DIR`` and kept, so that their build logs (``store.builds()``: which process
finished which artefact when) show where the time went.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from bench_demo import timed


def paper_zoo() -> list[str]:
    """The toyworld sizes that ``shiftlab demo --scale paper`` trains on, read from its spec."""
    import yaml

    spec = yaml.safe_load((resources.files("shiftlab") / "specs" / "paper.yaml").read_text())
    paths = [base["path"] for base in spec["base_models"]]
    return [path.removeprefix("toyworld:") for path in paths if path.startswith("toyworld:")]


def study(scale: str, *options: str, keep: Path | None = None) -> tuple[float, int, int]:
    """Seconds, distinct runs and design rows of one ``shiftlab demo --scale`` study, into
    a fresh store under ``keep`` (left there) or a temporary folder."""
    exe = str(Path(sys.executable).with_name("shiftlab"))
    with tempfile.TemporaryDirectory() as scratch:
        store = (keep or Path(scratch)) / scale
        if store.exists():
            raise SystemExit(f"{store}: already exists; --keep needs a folder without it")
        seconds, _ = timed(
            [exe, "demo", "--scale", scale, "--out", str(store), "--no-progress", *options]
        )
        design = pl.read_parquet(store / "tables" / "runs.parquet")
        print(f"{scale} worker seconds by stage: {stage_seconds(store)}")
    return seconds, design["run_id"].drop_nulls().n_unique(), design.height


def stage_seconds(store: Path) -> str:
    """Where a study's workers spent their time, from its build log: each artefact is
    charged the time since its process last finished one (a process's first artefact, which
    also pays the start and the model loading, is left out)."""
    from shiftlab.store import Store

    builds = (
        Store.open(store)
        .builds()
        .with_columns(pl.col("finished_at").str.to_datetime(time_zone="UTC"))
    )
    spent = (
        builds.sort("pid", "finished_at")
        .with_columns(pl.col("finished_at").diff().over("pid").dt.total_milliseconds() / 1e3)
        .group_by("kind")
        .agg(pl.len(), pl.col("finished_at").sum().alias("seconds"))
        .sort("seconds", descending=True)
    )
    total = spent["seconds"].sum()
    return ", ".join(
        f"{kind} {seconds:.0f} s ({seconds / total:.0%}, {n} x {seconds / n:.2f} s)"
        for kind, n, seconds in spent.iter_rows()
    )


def _train_zoo() -> None:
    start = time.perf_counter()
    code = "from shiftlab.toyworld import toyworld_model_dir\n"
    code += "".join(f"toyworld_model_dir({n!r}, progress=False)\n" for n in paper_zoo())
    subprocess.run([sys.executable, "-c", code], check=True)
    print(f"zoo_seconds={time.perf_counter() - start:.1f}")


def compare_executors(scales: list[str]) -> None:
    """Each scale on the sequential local executor, then on Ray; runs per second of each."""
    speedup = 0.0
    for scale in scales:
        local, n_runs, _ = study(scale, "--workers", "1")
        print(f"{scale} local (sequential): {local:.1f} s, {n_runs / local:.3f} runs/s")
        ray, ray_runs, _ = study(scale, "--executor", "ray")
        assert ray_runs == n_runs, (ray_runs, n_runs)
        print(f"{scale} ray: {ray:.1f} s, {n_runs / ray:.3f} runs/s")
        speedup = local / ray
        print(f"{scale}_ray_vs_local_speedup={speedup:.2f}")
    print(f"ray_vs_local_speedup={speedup:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-paper", action="store_true", help="time the demo only")
    parser.add_argument(
        "--executor", choices=["local", "ray"], default="local",
        help="ray: compare Ray tasks with the sequential local executor",
    )  # fmt: skip
    parser.add_argument("--keep", type=Path, help="write the stores under DIR and keep them")
    args = parser.parse_args()
    if not args.skip_paper:
        _train_zoo()
    if args.executor == "ray":
        compare_executors(["demo"] if args.skip_paper else ["demo", "paper"])
        return 0
    seconds, n_runs, rows = study("demo", keep=args.keep)
    print(f"demo: {seconds:.1f} s, {n_runs} distinct runs, {rows} design rows")
    print(f"runs_per_second={n_runs / seconds:.3f}")
    print(f"demo_seconds={seconds:.1f}")
    if not args.skip_paper:
        seconds, n_runs, rows = study("paper", keep=args.keep)
        print(f"paper scale: {seconds:.1f} s, {n_runs} distinct runs, {rows} design rows")
        print(f"paper_runs_per_second={n_runs / seconds:.3f}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak_memory_mb={peak:.0f}")
    if not args.skip_paper:
        print(f"paper_scale_toyworld_seconds={seconds:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
