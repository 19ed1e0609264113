"""Two CPU processes under `accelerate launch` (DDP over gloo) train to the same result as
one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def results(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))]


# Both objectives in one launch: each process start (torch, accelerate) costs more than the
# training, so one pair of processes trains SFT and then ACT.
OBJECTIVES = ("sft", "act")


def test_two_gloo_processes_match_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path / "one"), *OBJECTIVES],
        capture_output=True,
        env=env,
        check=True,
    )
    # The command README documents for one run on several GPUs, here on two CPU processes
    # (accelerate picks the gloo backend without CUDA).
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", str(_free_port())]  # fmt: skip
    double = subprocess.run(
        [*launch, str(WORKER), str(tmp_path / "two"), *OBJECTIVES],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert double.returncode == 0, double.stderr[-2000:]
    (one,) = results(tmp_path / "one")
    both = results(tmp_path / "two")
    assert len(both) == 2
    for objective in OBJECTIVES:
        for rank in both:
            assert rank[objective]["loss"] == pytest.approx(one[objective]["loss"], rel=1e-5)
            assert rank[objective]["weights"] == pytest.approx(one[objective]["weights"], rel=1e-5)
