"""Executors: the same study on submitit (its local executor) and on a local Ray cluster
gives the same tables as local workers; bad requests fail before anything is submitted."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from shiftlab.errors import SpecError
from shiftlab.executors import ExecutorError, check_executor, slurm_nodes
from shiftlab.spec import parse_spec
from shiftlab.store import Store
from shiftlab.study import StudyPlan, load_suites, run_on_executor, run_study
from spec_helpers import TINY_STUDY, changed

SPEC = changed(TINY_STUDY, ["organisms", "seeds"], [0, 1])


def _spec(**executor):
    return parse_spec({**SPEC, "executor": executor} if executor else SPEC)


@pytest.fixture(scope="module")
def local(tmp_path_factory, toy_model_dir):
    store = Store.open(tmp_path_factory.mktemp("local"))
    run_study(_spec(), store, progress=False, workers=2)
    return store


def _tables(store: Store) -> tuple[pl.DataFrame, pl.DataFrame]:
    return store.read_table("runs"), store.read_table("organisms")


def _built_once(store: Store) -> None:
    builds = store.builds()
    assert builds.height == builds.select("kind", "artefact_id").n_unique()


def _no_leftovers(root: Path) -> None:
    names = [p.name for p in root.rglob(".*") if p.name not in (".checkpoints", ".submitit")]
    assert not [n for n in names if n.startswith(".tmp-") or ".lease" in n], names


def test_two_workers_build_the_study_without_redoing_a_job(local):
    """``local`` was built by two worker processes; the studies run here with one worker (or
    on an executor) are compared with it."""
    builds = local.builds()
    for kind in ("base_evals", "organisms", "pools", "runs", "samples", "shift"):
        assert sorted(builds.filter(kind=kind)["artefact_id"]) == sorted(local.finished_ids(kind))
    assert builds["artefact_id"].is_unique().all()
    assert builds["pid"].n_unique() == 2  # both workers built something
    assert os.getpid() not in set(builds["pid"])
    _no_leftovers(local.root)


@pytest.mark.slow  # about 160 s; Ray builds phase one in the fast tier
def test_submitit_runs_the_stage_graph_as_jobs(local, tmp_path):
    store = Store.open(tmp_path / "store")
    design = run_study(_spec(kind="submitit", cluster="local", parallelism=2), store,
                       progress=False)  # fmt: skip
    assert design.equals(local.read_table("runs"))
    assert _tables(store)[1].equals(_tables(local)[1])
    _built_once(store)
    _no_leftovers(store.root)
    # 3 phase-1 units, then pools, runs and shift per organism: each its own process.
    pids = set(store.builds()["pid"])
    assert os.getpid() not in pids and len(pids) == 9
    assert len(list((store.root / ".submitit").glob("*/*_result.pkl"))) == 9


@pytest.fixture()
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_builds_phase_one_as_tasks(local, tmp_path, ray_cluster):
    """The fast tier's real Ray tasks: one organism's phase 1 (its base evaluation and its
    induction), each in a Ray worker, equal to that organism's rows in ``local``."""
    spec = changed(SPEC, ["organisms", "seeds"], [0])
    spec = parse_spec({**spec, "methods": []})
    store = Store.open(tmp_path / "store")
    run_study(spec, store, progress=False, executor="ray")
    organisms = store.read_table("organisms")
    assert organisms.height == 1
    assert organisms.equals(local.read_table("organisms").filter(seed=0))
    _built_once(store)
    _no_leftovers(store.root)
    pids = set(store.builds()["pid"])
    assert os.getpid() not in pids
    assert set(store.builds()["kind"]) == {"base_evals", "organisms"}


@pytest.mark.slow  # every stage of two organisms as Ray tasks: 37 s quiet, 310 s on a loaded CPU
def test_ray_runs_the_stage_graph_as_tasks(local, tmp_path, ray_cluster):
    store = Store.open(tmp_path / "store")
    design = run_study(_spec(), store, progress=False, executor="ray")
    assert design.equals(local.read_table("runs"))
    assert _tables(store)[1].equals(_tables(local)[1])
    _built_once(store)
    _no_leftovers(store.root)
    assert os.getpid() not in set(store.builds()["pid"])
    # A finished study submits nothing.
    run_study(_spec(), store, progress=False, executor="ray")
    assert store.builds().height == len(set(store.builds()["artefact_id"]))


def test_ray_refuses_a_request_the_cluster_cannot_satisfy(tmp_path, ray_cluster):
    store = Store.open(tmp_path / "store")
    spec = _spec(kind="ray", gpus_per_job=1)
    with pytest.raises(SpecError, match=r"executor\.gpus_per_job: 1 cannot be satisfied"):
        run_study(spec, store, progress=False)
    with pytest.raises(SpecError, match=r"executor\.cpus_per_job: 8 cannot be satisfied"):
        run_study(_spec(kind="ray", cpus_per_job=8), store, progress=False)
    assert not store.finished_ids("organisms") and not list(store.root.glob(".probe-*"))


def test_a_missing_engine_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))  # fmt: skip
    with pytest.raises(ExecutorError, match=r"pip install 'shiftlab\[ray\]'"):
        check_executor("ray")
    with pytest.raises(SpecError, match="executor: expected one of local, submitit, ray"):
        check_executor("dask")


SINFO = """#!/bin/sh
cat <<'END'
gpu*|64|512000|gpu:a100:8(S:0-1)|2-00:00:00|idle
gpu*|64|512000|gpu:a100:4(S:0),gpu:a100:4(S:1)|2-00:00:00|mix
cpu|32|128000|(null)|12:00:00|idle
cpu|48|256000|(null)|12:00:00|alloc
cpu|96|1024000|(null)|12:00:00|down*
END
"""


@pytest.fixture()
def fake_slurm(tmp_path, monkeypatch):
    """sinfo and sbatch on PATH, answering as a two-partition cluster would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sinfo").write_text(SINFO)
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho submitted >> $0.calls\n")
    for tool in ("sinfo", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def test_slurm_nodes_are_read_from_sinfo(fake_slurm):
    nodes = slurm_nodes()
    assert [n["gpus"] for n in nodes["gpu"]] == [8, 8]
    assert nodes["gpu"][0] == {"cpus": 64, "mem_gb": 500.0, "gpus": 8, "time_min": 2880,
                               "default": True}  # fmt: skip
    assert [n["cpus"] for n in nodes["cpu"]] == [32, 48]  # the down node is left out
    assert nodes["cpu"][0]["time_min"] == 720


@pytest.mark.parametrize(
    ("executor", "message"),
    [
        ({"slurm_partition": "cpu", "gpus_per_job": 1}, "gpus_per_job: 1 cannot be satisfied in "
                                                        "partition 'cpu'"),
        ({"slurm_partition": "cpu", "timeout_min": 1000}, "timeout_min: 1000 cannot be"),
        ({"cpus_per_job": 65}, "cpus_per_job: 65 cannot be satisfied in partition 'gpu'"),
        ({"mem_gb": 600}, "mem_gb: 600 cannot be satisfied"),
        ({"slurm_partition": "big"}, "no partition 'big'; this cluster has cpu, gpu"),
        ({"slurm_partition": "cpu", "cpus_per_job": 90}, "cpus_per_job: 90 cannot be satisfied"),
    ],
)  # fmt: skip
def test_an_unsatisfiable_slurm_request_fails_before_submission(fake_slurm, tmp_path, executor,
                                                                message):  # fmt: skip
    spec = _spec(kind="submitit", **executor)
    store = Store.open(tmp_path / "store")
    with pytest.raises(SpecError, match=message):
        run_on_executor(StudyPlan(spec, load_suites(spec)), store, "submitit", progress=False)
    assert not (fake_slurm / "sbatch.calls").exists()


def test_a_store_only_this_machine_sees_is_refused_for_slurm(fake_slurm, tmp_path):
    spec = _spec(kind="submitit", slurm_partition="gpu", gpus_per_job=1)
    store = Store.open(tmp_path / "store")
    with pytest.raises(ExecutorError, match="SLURM jobs on other nodes cannot see it"):
        run_on_executor(StudyPlan(spec, load_suites(spec)), store, "submitit", progress=False)
    assert not (fake_slurm / "sbatch.calls").exists()


def test_without_slurm_tools_the_message_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    spec = _spec(kind="submitit")
    with pytest.raises(ExecutorError, match="needs sbatch and sinfo on PATH"):
        run_on_executor(StudyPlan(spec, load_suites(spec)), Store.open(tmp_path / "s"), "submitit")


def _run_cli(spec_file: Path, *extra: str) -> subprocess.Popen:
    exe = str(Path(sys.executable).with_name("shiftlab"))
    return subprocess.Popen(
        [exe, "run", str(spec_file), "--no-progress", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, start_new_session=True,
    )  # fmt: skip


def _spec_file(tmp_path: Path, root: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "store": str(root)}))
    return path


def test_a_study_killed_mid_run_and_started_again_matches_an_uninterrupted_one(local, tmp_path):
    root = tmp_path / "store"
    spec_file = _spec_file(tmp_path, root)
    first = _run_cli(spec_file, "--workers", "1")
    store = Store.open(root)
    deadline = time.monotonic() + 300
    while not store.finished_ids("runs") and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # between one run and the next of an organism
    first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL
    assert list((root / "runs").glob(".*.lease")), "the killed worker's lease is still there"
    second = _run_cli(spec_file, "--workers", "1")
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-2000:]
    for ours, theirs in zip(_tables(store), _tables(local), strict=True):
        assert ours.equals(theirs)
    _built_once(store)
    _no_leftovers(root)


@pytest.mark.slow
def test_two_studies_on_one_store_at_once_do_no_job_twice(local, tmp_path):
    root = tmp_path / "store"
    spec_file = _spec_file(tmp_path, root)
    both = [_run_cli(spec_file, "--workers", "1") for _ in range(2)]
    for process in both:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
    store = Store.open(root)
    for ours, theirs in zip(_tables(store), _tables(local), strict=True):
        assert ours.equals(theirs)
    _built_once(store)
    assert store.builds()["pid"].n_unique() == 2  # both took part
    _no_leftovers(root)


@pytest.mark.slow
def test_a_submitit_job_killed_mid_run_is_submitted_again(local, tmp_path):
    root = tmp_path / "store"
    spec_file = tmp_path / "spec.yaml"
    executor = {"kind": "submitit", "cluster": "local", "parallelism": 2, "retries": 1}
    spec_file.write_text(yaml.safe_dump({**SPEC, "store": str(root), "executor": executor}))
    driver = _run_cli(spec_file)
    store = Store.open(root)
    deadline = time.monotonic() + 300
    while not store.finished_ids("runs") and time.monotonic() < deadline:
        time.sleep(0.1)
    job = store.builds().filter(kind="runs")["pid"][0]
    os.kill(job, signal.SIGKILL)  # the job process, mid-way through its organism's runs
    _, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-2000:]
    for ours, theirs in zip(_tables(store), _tables(local), strict=True):
        assert ours.equals(theirs)
    _built_once(store)
    _no_leftovers(root)
    runs_jobs = store.builds().filter(kind="runs")["pid"].unique().to_list()
    assert job in runs_jobs and len(runs_jobs) >= 2  # a new job finished what the dead one left
