"""Workers sharing one store: claims through leases, and failures that stop them all."""

import os
import re
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


def test_one_thread_on_cpu_and_restored_after():
    import torch

    before = torch.get_num_threads()
    with single_thread_on_cpu():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
