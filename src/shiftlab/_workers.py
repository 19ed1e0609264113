"""Several worker processes on one store, each claiming jobs through the store's locks.

A worker builds every unit it can claim and then waits for units other workers hold, so
workers need nothing but the store to share a study. The claims are leases
(:mod:`shiftlab._lease`): a dead worker's expires, and its unit is claimed again by
whoever passes next. A unit whose artefacts are finished is never built again. SIGTERM
to the process that started the workers stops them all: each releases its leases first.

On CPU every worker (and an in-process study) runs torch on one thread: a job's numbers
then do not depend on how many workers share the machine, or on its core count, and two
single-threaded processes use two cores better than one process with two threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import pickle
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from shiftlab._lease import Lease, LeaseLost
from shiftlab.errors import ShiftlabError, Terminated

U = TypeVar("U")
POLL_SECONDS = 0.2
# How long a stopping worker may take to release its leases before it is killed.
STOP_SECONDS = 10.0
TERMINATED_EXIT = 128 + signal.SIGTERM


def _raise_terminated(signum: int, frame: Any) -> None:
    # A second SIGTERM must not interrupt the clean-up the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`~shiftlab.errors.Terminated` in the main
    thread, so ``finally`` blocks (lease releases, worker shutdown) run before the process
    ends. Elsewhere than the main thread this does nothing (Python delivers signals there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def default_workers() -> int:
    """One worker per usable CPU core on a CPU-only machine, one on a GPU machine."""
    import torch

    if torch.cuda.is_available():
        return 1
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return max(1, len(usable) if usable is not None else os.cpu_count() or 1)


# glibc hands a freed block of 128 KiB or more back to the kernel (raising that bar only
# as such blocks are freed), so the activations a training step allocates afresh fault
# their pages in again every step: 2,148 page faults a step on toyworld's model, 8% of
# its time on a 2-core AMD EPYC. Freed blocks up to MMAP_THRESHOLD now stay in
# the heap for reuse, and up to TRIM_THRESHOLD of free memory stays mapped.
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for this setting
TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


@functools.cache
def retain_freed_memory() -> bool:
    """Have glibc's allocator keep freed memory (blocks below 32 MiB, up to 256 MiB free)
    for reuse instead of returning it to the kernel, for the rest of the process; whether
    it did (False where the C library is not glibc). Called by every CPU study process.

    >>> retain_freed_memory() in (True, False)
    True
    """
    try:
        libc = ctypes.CDLL(None)  # the process's own C library (Windows has no such handle)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
    except (OSError, AttributeError, TypeError):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


@contextlib.contextmanager
def single_thread_on_cpu() -> Iterator[None]:
    """Run torch on one thread (CPU only); the previous setting is restored afterwards.

    On CPU the process also keeps freed memory for reuse from then on
    (:func:`retain_freed_memory`): glibc cannot go back to its adaptive setting.
    """
    import torch

    if torch.cuda.is_available():
        yield
        return
    retain_freed_memory()
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


# Most of a traceback a worker sends back, and the largest pickled error it sends with it:
# the report must fit the pipe's buffer, which the parent reads only once the worker ended.
REPORT_CHARS = 8000
ERROR_BYTES = 32_000


def _worker_main(
    report_to: Any, environ: dict[str, str], target: Callable[..., None], args: Sequence[Any]
) -> None:
    # A worker forked from the fork server starts with the server's environment (the
    # pool's creator's when the server started): give it the creator's of now, as a
    # spawned process would have had.
    os.environ.clear()
    os.environ.update(environ)
    # One thread for every pool a worker's libraries keep, not just torch's.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        with sigterm_unwinds(), single_thread_on_cpu():
            target(*args)
    except Terminated:
        # Leases are released by now. Exit (running multiprocessing's clean-up, which dying
        # by the signal would skip) with the shell's code for SIGTERM: the parent, if it is
        # not the one stopping, treats that like any killed worker and hands its job on.
        raise SystemExit(TERMINATED_EXIT) from None
    except BaseException as error:
        report = traceback.format_exc()[-REPORT_CHARS:]
        try:
            payload: bytes | None = pickle.dumps(error)
        except Exception:
            payload = None
        if payload is not None and len(payload) > ERROR_BYTES:
            payload = None
        report_to.send((payload, report))
        raise SystemExit(1) from None


class WorkerError(RuntimeError):
    """A worker process failed on something other than bad input; carries its traceback."""


# The package's source files (how many, the newest modification) when the fork server
# started: a pool started after they changed is spawned instead of forked from a server
# holding other code. (The import path may grow, as importing ray makes it: what the
# server imported was found on the path as it was, and this process's modules are the same.)
_FORK_SERVER: dict[str, Any] = {}


def _code_stamp() -> tuple[int, int]:
    times = [p.stat().st_mtime_ns for p in Path(__file__).resolve().parent.rglob("*.py")]
    return len(times), max(times, default=0)


def _context(preload: Sequence[str]) -> Any:
    """multiprocessing's fork server on Linux, else spawn.

    Neither forks a process that has run torch (whose thread pools a fork leaves broken):
    the fork server is a fresh interpreter, started with the first pool and kept until
    this process ends, that imports ``preload`` once; each worker is a fork of it. A study
    worker then starts without paying torch's, transformers' and peft's imports itself
    (9 s of CPU on a 2-core EPYC), and later pools of the same process (a notebook's, a
    test session's) start at once. The server gets this process's import path (Python
    3.11's ignores it otherwise); once the package's source files have changed, pools are
    spawned, so workers never run older code than their creator would.
    macOS, where forking a process that loaded Apple's frameworks is unsafe, and Windows
    spawn.
    """
    import multiprocessing
    import sys

    if sys.platform != "linux":
        return multiprocessing.get_context("spawn")
    state = _code_stamp()
    if _FORK_SERVER.get("state", state) != state:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    if not _FORK_SERVER:
        from multiprocessing import forkserver
        from unittest import mock

        context.set_forkserver_preload(list(preload))
        path = os.pathsep.join(entry for entry in sys.path if entry)
        with mock.patch.dict(os.environ, PYTHONPATH=path):  # each worker restores its creator's
            forkserver.ensure_running()
        _FORK_SERVER["state"] = state
    return context


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


# The exit code multiprocessing reports for a fork server's worker whose status it lost
# (the server died): the worker may still be running.
UNKNOWN_EXIT = 255


class WorkerPool:
    """``n`` processes each running ``target(*args)``; a failure stops them all.

    ``preload`` names modules the workers import anyway: the fork server (see
    :func:`_context`) imports them with ``target``'s module before the first worker.
    Environment variables are the creator's at the pool's start; a library that reads one
    when it is imported (``HF_HUB_OFFLINE``, say) has read it when the server started.

    >>> with WorkerPool(2, time.sleep, (0.1,)) as pool:
    ...     pool.join()
    >>> pool.check()  # every worker has finished
    False
    """

    def __init__(
        self,
        n: int,
        target: Callable[..., None],
        args: Sequence[Any],
        preload: Sequence[str] = (),
    ) -> None:
        context = _context([target.__module__, *preload])
        # One pipe per worker for its failure report: plain pipes hold no semaphores, which
        # a queue would leave behind when the pool is stopped by a signal.
        pipes = [context.Pipe(duplex=False) for _ in range(n)]
        self._reports = {f"shiftlab-worker-{i}": reader for i, (reader, _) in enumerate(pipes)}
        self._processes = [
            context.Process(
                target=_worker_main,
                args=(writer, dict(os.environ), target, tuple(args)),
                name=f"shiftlab-worker-{i}",
                daemon=True,
            )
            for i, (_, writer) in enumerate(pipes)
        ]
        self._killed: set[str] = set()
        for process in self._processes:
            process.start()
        for _, writer in pipes:
            writer.close()  # the worker holds its own end

    def check(self) -> bool:
        """True while any worker still runs.

        A worker that failed (an exception, reported through its pipe) stops the others
        and its error is raised here. A worker killed by a signal (or stopped by SIGTERM)
        is only reported: its claim is released with it, and the others take its job over.
        """
        for process in self._processes:
            code = process.exitcode
            if code is None:
                continue
            signalled = code < 0 or code == TERMINATED_EXIT
            if signalled and process.name not in self._killed:
                self._killed.add(process.name)
                number = signal.SIGTERM if code == TERMINATED_EXIT else -code
                warnings.warn(f"{process.name} was killed (signal {number}); the other "
                              "workers take its job over", stacklevel=2)  # fmt: skip
            elif code > 0 and not signalled:
                error = self._error(process)  # read before stop() closes the pipes
                self.stop()
                raise error
        return any(p.exitcode is None for p in self._processes)

    @property
    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [p.pid for p in self._processes if p.pid is not None]

    def _error(self, process: Any) -> BaseException:
        reader = self._reports[process.name]
        try:
            payload, report = reader.recv() if reader.poll() else (None, None)
        except (EOFError, OSError):
            payload, report = None, None
        if report is None:
            return WorkerError(f"{process.name} died (exit code {process.exitcode})")
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
        """Ask every worker to stop (SIGTERM: each releases its leases), kill one that has
        not ended within :data:`STOP_SECONDS`, and wait for all."""
        orphans = [p.pid for p in self._processes
                   if p.exitcode == UNKNOWN_EXIT and _alive(p.pid)]  # fmt: skip
        for process in self._processes:
            if process.exitcode is None:
                process.terminate()
        for pid in orphans:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join()
        while orphans and time.monotonic() < deadline:
            orphans = [pid for pid in orphans if _alive(pid)]
            time.sleep(POLL_SECONDS)
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for reader in self._reports.values():
            reader.close()

    def __enter__(self) -> WorkerPool:
        self._signals = sigterm_unwinds()
        self._signals.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self._signals.__exit__(None, None, None)
