"""Time the demo study cold and warm: ``python benchmarks/bench_demo.py``.

Targets (issue 23): cold at most 120 s on 2 cores after set-up, warm (everything
finished) at most 3 s.
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
    print(f"cold: {cold:.1f} s (target 120 s, ratio {cold / 120:.2f})")
    print(f"warm: {warm:.1f} s (target 3 s, ratio {warm / 3:.2f})")
    print(f"demo_cold_seconds={cold:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
