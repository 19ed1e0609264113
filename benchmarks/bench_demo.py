"""Time the demo study cold and warm: ``python benchmarks/bench_demo.py``.

Targets: cold under 180 s after set-up (issue 4: phases 1-3; issue 2's 120 s was for
phase 1 alone), warm (everything finished) under 10 s.
Prints both times and their ratios to those targets; the last line is
``demo_cold_seconds=<s>``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    exe = str(Path(sys.executable).with_name("shiftlab"))
    with tempfile.TemporaryDirectory() as root:
        store = str(Path(root) / "demo")
        cold = timed([exe, "demo", "--out", store, "--no-progress"])
        warm = timed([exe, "demo", "--out", store, "--no-progress"])
    print(f"cold: {cold:.1f} s (target 180 s, ratio {cold / 180:.2f})")
    print(f"warm: {warm:.1f} s (target 10 s, ratio {warm / 10:.2f})")
    print(f"demo_cold_seconds={cold:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
