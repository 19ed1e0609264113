"""Workers sharing one store: claims through leases, and failures that stop them all."""

import os
import re
import sys
import threading
import time
from collections.abc import Callable

import pytest

from shiftlab._workers import WorkerError, WorkerPool, claim_each, single_thread_on_cpu
from shiftlab.errors import DataError
from shiftlab.store import Store


def _hold(path: str, seconds: float, then: Callable[[], None] = lambda: None) -> threading.Thread:
    """Another worker's claim on ``path``: held from return until ``seconds`` later."""
    from shiftlab._lease import Lease

    holding = threading.Event()

    def hold() -> None:
        # A second lease object on the same file conflicts just as another process's does.
        with Lease(path):
            holding.set()
            time.sleep(seconds)
            then()

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait()
    return thread


def test_claim_each_builds_free_units_and_waits_for_held_ones(tmp_path):
    store = Store.open(tmp_path)
    done = {"c"}  # finished before this worker started: never built again
    built: list[str] = []

    def build(unit: str) -> None:
        built.append(unit)
        done.add(unit)

    holder = _hold(store.lock("runs", "b").path, 0.5)
    claim_each(
        ["a", "b", "c"],
        lock=lambda u: store.lock("runs", u),
        finished=done.__contains__,
        build=build,
    )
    holder.join()
    assert built == ["a", "b"]  # "b" once its holder let go


def test_claim_each_skips_a_unit_finished_by_its_holder(tmp_path):
    store = Store.open(tmp_path)
    done: set[str] = set()
    holder = _hold(store.lock("runs", "a").path, 0.3, lambda: done.add("a"))
    claim_each(["a"], lock=lambda u: store.lock("runs", u), finished=done.__contains__,
               build=lambda u: pytest.fail(f"{u} was built twice"))  # fmt: skip
    holder.join()


def _raise_data_error(message: str) -> None:
    raise DataError(message)


def _die() -> None:
    os._exit(3)


def test_a_workers_input_error_reaches_the_caller_unchanged():
    message = "bad.jsonl:3: field 'target' is missing"
    with (
        pytest.raises(DataError, match=re.escape(message)),
        WorkerPool(2, _raise_data_error, (message,)) as pool,
    ):
        pool.join()


def test_a_worker_that_dies_stops_the_pool_with_its_exit_code():
    with pytest.raises(WorkerError, match="exit code 3"), WorkerPool(1, _die, ()) as pool:
        pool.join()


def _write_environment(path: str) -> None:
    import sys

    with open(path, "w") as out:  # ``wave``: a module nothing here imports
        out.write(f"{os.environ.get('SHIFTLAB_TEST_SETTING')} {'wave' in sys.modules}")


def test_workers_see_the_environment_of_their_pools_start(tmp_path, monkeypatch):
    """Workers fork from a server started with the first pool (which may be this test's or
    an earlier one's): each pool's workers still see the environment of its own start."""
    for value in ("first", "second"):
        monkeypatch.setenv("SHIFTLAB_TEST_SETTING", value)
        with WorkerPool(1, _write_environment, (str(tmp_path / value),)) as pool:
            pool.join()
    assert (tmp_path / "first").read_text().split()[0] == "first"
    assert (tmp_path / "second").read_text().split()[0] == "second"


PRELOAD_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from shiftlab._workers import WorkerPool
from test_workers import _write_environment
if __name__ == "__main__":
    with WorkerPool(1, _write_environment, (sys.argv[2],), ["wave"]) as pool:
        pool.join()
    assert "wave" not in sys.modules
"""


@pytest.mark.skipif(
    "forkserver" not in __import__("multiprocessing").get_all_start_methods(),
    reason="no fork server on this platform: workers are spawned and import what they use",
)
def test_the_first_pool_starts_a_server_that_imports_the_preloads(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "pool.py"
    script.write_text(PRELOAD_SCRIPT)
    out = tmp_path / "out"
    env = {**os.environ, "SHIFTLAB_TEST_SETTING": "x"}
    command = [sys.executable, str(script), str(Path(__file__).parent), str(out)]
    subprocess.run(command, check=True, capture_output=True, env=env)
    assert out.read_text() == "x True"


LINUX_ONLY = pytest.mark.skipif(
    sys.platform != "linux", reason="workers fork from a server on Linux only; elsewhere spawned"
)


@LINUX_ONLY
def test_pools_are_spawned_once_the_package_changed(monkeypatch):
    from shiftlab import _workers

    # As if this process's server had started: the check needs no server of its own.
    monkeypatch.setattr(_workers, "_FORK_SERVER", {"state": _workers._code_stamp()})
    assert _workers._context([]).get_start_method() == "forkserver"
    monkeypatch.setattr(_workers, "_code_stamp", lambda: (0, 0))  # a source file was edited
    assert _workers._context([]).get_start_method() == "spawn"


ORPHAN_SCRIPT = """
import os, signal, sys, time
from multiprocessing import forkserver
from shiftlab._workers import WorkerError, WorkerPool
if __name__ == "__main__":
    try:
        with WorkerPool(1, time.sleep, (120,)) as pool:
            (pid,) = pool.pids
            time.sleep(0.5)
            os.kill(forkserver._forkserver._forkserver_pid, signal.SIGKILL)
            pool.join()
    except WorkerError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(0)
    os.kill(pid, signal.SIGKILL)
    sys.exit("the worker outlived its pool")
"""


@LINUX_ONLY
def test_workers_a_dead_fork_server_loses_are_stopped_with_the_pool(tmp_path):
    """A killed fork server leaves its workers running and their status unknown: the
    pool's stop still ends them, so none goes on claiming jobs."""
    import subprocess

    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_one_thread_on_cpu_and_restored_after():
    import torch

    before = torch.get_num_threads()
    with single_thread_on_cpu():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


MAPPED_SCRIPT = """
import ctypes, sys
if sys.argv[1] == "retain":
    from shiftlab._workers import retain_freed_memory
    assert retain_freed_memory()
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2().hblks
block = libc.malloc(24 << 20)
print(libc.mallinfo2().hblks - before)
libc.free(block)
"""


def test_retained_memory_comes_from_the_heap_not_fresh_mappings():
    import ctypes
    import subprocess
    import sys

    from shiftlab._workers import retain_freed_memory

    if not retain_freed_memory():
        pytest.skip("the C library is not glibc")
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("glibc older than 2.33 has no mallinfo2")
    # glibc's own defaults, whatever MALLOC_* tunables the shell running the tests sets.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}

    def mappings(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", MAPPED_SCRIPT, mode],
                              capture_output=True, text=True, check=True, env=env)  # fmt: skip
        return int(done.stdout.split()[-1])

    # A 24 MiB block is a fresh mapping by default (faulted in page by page, given back to
    # the kernel when freed); kept, it comes from the heap, where freed memory is reused.
    assert mappings("default") == 1
    assert mappings("retain") == 0


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc (Linux)."""
    from pathlib import Path

    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(proc.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process trees from /proc")
def test_sigterm_stops_every_worker_releases_leases_and_keeps_finished_work(tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from spec_helpers import TINY_STUDY

    root = tmp_path / "store"
    spec_file = tmp_path / "spec.yaml"
    study = {**TINY_STUDY, "organisms": {"seeds": [0, 1]}, "store": str(root)}
    spec_file.write_text(yaml.safe_dump(study))
    exe = str(Path(sys.executable).with_name("shiftlab"))
    process = subprocess.Popen(
        [exe, "run", str(spec_file), "--workers", "2", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )  # fmt: skip
    builds = root / "builds.jsonl"
    deadline = time.monotonic() + 300
    while not (builds.is_file() and builds.read_text()) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.1)
    workers = _descendants(process.pid)
    assert len(workers) >= 2  # two workers (and multiprocessing's fork server and tracker)
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == (
        "shiftlab: terminated (SIGTERM); finished artefacts are kept"
    )
    assert "Traceback" not in err
    while any(_alive(pid) for pid in workers) and time.monotonic() - started < 30:
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)], "a worker outlived the study"
    assert not list(root.rglob(".*.lease")), "a lease was left behind"
    assert not list(root.rglob(".tmp-*")), "a half-written artefact was left behind"
    store = Store.open(root)
    built = [line for line in builds.read_text().splitlines() if line]
    finished = sum(len(store.finished_ids(kind)) for kind in ("organisms", "base_evals"))
    assert finished >= 1 and len(built) >= finished  # finished work is kept
