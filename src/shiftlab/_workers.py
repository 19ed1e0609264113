"""Several worker processes on one store, each claiming jobs through the store's locks.

A worker builds every unit it can claim and then waits for units other workers hold, so
workers need nothing but the store to share a study. The locks are ``flock`` locks: the
kernel releases a dead worker's, and its unit is claimed again by whoever passes next.
A unit whose artefacts are finished is never built again.

On CPU every worker (and an in-process study) runs torch on one thread: a job's numbers
then do not depend on how many workers share the machine, or on its core count, and two
single-threaded processes use two cores better than one process with two threads.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from shiftlab._lease import Lease, LeaseLost
from shiftlab.errors import ShiftlabError

U = TypeVar("U")
POLL_SECONDS = 0.2


def default_workers() -> int:
    """One worker per usable CPU core on a CPU-only machine, one on a GPU machine."""
    import torch

    if torch.cuda.is_available():
        return 1
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return max(1, len(usable) if usable is not None else os.cpu_count() or 1)


@contextlib.contextmanager
def single_thread_on_cpu() -> Iterator[None]:
    """Run torch on one thread (CPU only); the previous setting is restored afterwards."""
    import torch

    if torch.cuda.is_available():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def claim_each(
    units: Iterable[U],
    *,
    lock: Callable[[U], Lease],
    finished: Callable[[U], bool],
    build: Callable[[U], None],
) -> None:
    """Build each unfinished unit this worker can claim; return once all are finished.

    Units held by another worker are passed over and checked again after a pass; if that
    worker dies its lease expires (at once for a process on this host) and the unit is
    built here.
    """
    remaining = list(units)
    while remaining:
        held_elsewhere = []
        for unit in remaining:
            if finished(unit):
                continue
            claim = lock(unit)
            if not claim.acquire(blocking=False):
                held_elsewhere.append(unit)
                continue
            try:
                if not finished(unit):
                    build(unit)
            except LeaseLost:
                # This worker stalled and another took the unit over: let that one finish.
                held_elsewhere.append(unit)
            finally:
                claim.release()
        remaining = held_elsewhere
        if remaining:
            time.sleep(POLL_SECONDS)


# Most of a traceback a worker sends back; the pipe must not fill before the parent reads.
REPORT_CHARS = 8000


def _worker_main(queue: Any, target: Callable[..., None], args: Sequence[Any]) -> None:
    # One thread for every pool a worker's libraries keep, not just torch's.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        with single_thread_on_cpu():
            target(*args)
    except BaseException as error:
        report = traceback.format_exc()[-REPORT_CHARS:]
        try:
            payload = pickle.dumps(error)
        except Exception:
            payload = None
        queue.put((payload, report))
        raise SystemExit(1) from None


class WorkerError(RuntimeError):
    """A worker process failed on something other than bad input; carries its traceback."""


class WorkerPool:
    """``n`` spawned processes each running ``target(*args)``; a failure stops them all.

    >>> with WorkerPool(2, time.sleep, (0.1,)) as pool:
    ...     pool.join()
    >>> pool.check()  # every worker has finished
    False
    """

    def __init__(self, n: int, target: Callable[..., None], args: Sequence[Any]) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._queue = context.SimpleQueue()
        self._processes = [
            context.Process(
                target=_worker_main,
                args=(self._queue, target, tuple(args)),
                name=f"shiftlab-worker-{i}",
                daemon=True,
            )
            for i in range(n)
        ]
        self._killed: set[str] = set()
        for process in self._processes:
            process.start()

    def check(self) -> bool:
        """True while any worker still runs.

        A worker that failed (an exception, reported through the queue) stops the others
        and its error is raised here. A worker killed by a signal is only reported: its
        claim is released with it, and the others take its job over.
        """
        for process in self._processes:
            code = process.exitcode
            if code is not None and code < 0 and process.name not in self._killed:
                self._killed.add(process.name)
                warnings.warn(f"{process.name} was killed (signal {-code}); the other "
                              "workers take its job over", stacklevel=2)  # fmt: skip
            elif code is not None and code > 0:
                self.stop()
                raise self._error(process)
        return any(p.exitcode is None for p in self._processes)

    @property
    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [p.pid for p in self._processes if p.pid is not None]

    def _error(self, process: Any) -> BaseException:
        if self._queue.empty():
            return WorkerError(f"{process.name} died (exit code {process.exitcode})")
        payload, report = self._queue.get()
        try:
            error = pickle.loads(payload) if payload is not None else None
        except Exception:
            error = None
        if isinstance(error, ShiftlabError):
            return error
        return WorkerError(f"{process.name} failed:\n{report}")

    def join(self) -> None:
        """Wait for every worker to finish; raise the first failure."""
        while self.check():
            time.sleep(POLL_SECONDS)

    def stop(self) -> None:
        for process in self._processes:
            if process.exitcode is None:
                process.terminate()
        for process in self._processes:
            process.join()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
