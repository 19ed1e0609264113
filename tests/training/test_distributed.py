"""Two CPU processes (DDP over gloo) train to the same result as one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("ddp_worker.py")


def results(output: str) -> list[dict]:
    return [json.loads(line[7:]) for line in output.splitlines() if line.startswith("RESULT ")]


def test_two_gloo_processes_match_one_process():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    single = subprocess.run(
        [sys.executable, str(WORKER)], capture_output=True, text=True, env=env, check=True
    )
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
    ]
    double = subprocess.run(
        [*torchrun, str(WORKER)], capture_output=True, text=True, env=env, check=False
    )
    assert double.returncode == 0, double.stderr[-2000:]
    (one,) = results(single.stdout)
    both = results(double.stdout)
    assert len(both) == 2
    for rank in both:
        assert rank["loss"] == pytest.approx(one["loss"], rel=1e-5)
        assert rank["weights"] == pytest.approx(one["weights"], rel=1e-5)
