"""Time the demo study cold and warm: ``python benchmarks/bench_demo.py``.

Targets (issue 23): cold at most 120 s on 2 cores after set-up, warm (everything
finished) at most 3 s.
Prints the cold run's stages (when each stage's first and last artefact was written,
seconds after the start, from the store's manifests), both times and their ratios to
those targets; the last line is ``demo_cold_seconds=<s>``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The store's stages in the order they run (base evaluations among the organisms, each
# organism's own samples at the start of its shift).
STAGES = ("base_evals", "organisms", "pools", "runs", "samples", "shift")


def timed(args: list[str]) -> tuple[float, float]:
    """Wall seconds of the command, and when it started (epoch seconds)."""
    started = time.time()
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, started


def stage_times(store: Path, started: float) -> list[str]:
    """Each stage's first and last manifest written, in seconds after ``started``."""
    lines = []
    for stage in STAGES:
        written = sorted(p.stat().st_mtime for p in (store / stage).rglob("*manifest.json"))
        if written:
            first, last = written[0] - started, written[-1] - started
            lines.append(f"  {stage:<10} {len(written):>4} artefacts, {first:6.1f}-{last:.1f} s")
    report = store / "report.html"
    if report.is_file():
        lines.append(f"  report     written at {report.stat().st_mtime - started:6.1f} s")
    return lines


def main() -> int:
    exe = str(Path(sys.executable).with_name("shiftlab"))
    with tempfile.TemporaryDirectory() as root:
        store = str(Path(root) / "demo")
        cold, started = timed([exe, "demo", "--out", store, "--no-progress"])
        print("cold run's stages:", *stage_times(Path(store), started), sep="\n")
        warm, _ = timed([exe, "demo", "--out", store, "--no-progress"])
    print(f"cold: {cold:.1f} s (target 120 s, ratio {cold / 120:.2f})")
    print(f"warm: {warm:.1f} s (target 3 s, ratio {warm / 3:.2f})")
    print(f"demo_cold_seconds={cold:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
