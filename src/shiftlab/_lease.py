"""Leases: claims on store artefacts that work across processes and hosts.

A lease is a small file beside the artefact (``<kind>/.<id>.lease``) holding its owner
(host, pid, a random token) and an expiry time. It is created atomically with a hard link
(safe on NFS, where ``flock`` is not), renewed from a background thread while it is held,
and removed on release. A holder that dies stops renewing: once the lease has expired, or
at once when the holder was a process on this host that no longer exists, another worker
takes it over and redoes the job. Expiry compares wall clocks, so hosts sharing a store
need clocks within a small fraction of the lease time.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / ".job.lease"
>>> first, second = Lease(path), Lease(path)
>>> first.acquire(blocking=False), second.acquire(blocking=False)
(True, False)
>>> first.release(); second.acquire(blocking=False)
True
>>> second.release()
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from shiftlab.errors import StoreError

# How long a lease lives without renewal; renewed every third of it.
LEASE_SECONDS = float(os.environ.get("SHIFTLAB_LEASE_SECONDS", "60"))
POLL_SECONDS = 0.2
HOST = platform.node()


class LeaseLost(StoreError):
    """A lease expired while held (its holder stalled) and another worker took it over."""


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against a reused pid), if /proc has it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads(path.read_text())
        return record
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being replaced right now: treat as held


def _dead_here(record: dict[str, Any]) -> bool:
    """True when the holder was a process on this host that is gone (or replaced)."""
    if record.get("host") != HOST or not isinstance(record.get("pid"), int):
        return False
    started = _start_time(record["pid"])
    return started is None or started != record.get("started")


class Lease:
    """A re-entrant claim on ``path``; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str], ttl: float | None = None) -> None:
        self.path = Path(path)
        self.ttl = LEASE_SECONDS if ttl is None else ttl
        self.token = uuid.uuid4().hex
        self._depth = 0
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost = False

    # -- the lease file ------------------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        return {
            "host": HOST,
            "pid": os.getpid(),
            "started": _start_time(os.getpid()),
            "token": self.token,
            "expires": time.time() + self.ttl,
        }

    def _write_private(self) -> Path:
        tmp = self.path.with_name(f"{self.path.name}.{self.token}.tmp")
        tmp.write_text(json.dumps(self._record()))
        return tmp

    def _create(self) -> bool:
        tmp = self._write_private()
        try:
            os.link(tmp, self.path)  # fails if the lease exists: atomic, also over NFS
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, seen: dict[str, Any]) -> bool:
        """Remove an expired lease (only one taker can move it aside) and create ours."""
        aside = self.path.with_name(f"{self.path.name}.{self.token}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return self._create()
        moved = _read(aside)
        if moved != seen:  # another worker renewed or took it between our read and rename
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return self._create()

    def _try(self) -> bool:
        if self._create():
            return True
        seen = _read(self.path)
        if seen is None:
            return self._create()
        if not seen:
            return False
        if seen.get("token") == self.token:
            return True
        if seen.get("expires", 0) < time.time() or _dead_here(seen):
            return self._take_over(seen)
        return False

    # -- holding -------------------------------------------------------------------------

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            current = _read(self.path)
            if current and current.get("token") != self.token:
                self.lost = True
                return
            tmp = self._write_private()
            os.replace(tmp, self.path)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lease; False if ``blocking`` is off (or ``timeout`` passes) while
        another worker holds it."""
        if self._depth:
            self._depth += 1
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._try():
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                return False
            time.sleep(POLL_SECONDS)
        self._depth, self.lost = 1, False
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, daemon=True, name="lease-renewer")
        self._renewer.start()
        return True

    def release(self) -> None:
        """Give the lease up (the last of nested acquisitions removes the file)."""
        if not self._depth:
            return
        self._depth -= 1
        if self._depth:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        current = _read(self.path)
        if current and current.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def check(self) -> None:
        """Raise :class:`LeaseLost` if another worker took this lease over."""
        if self.lost:
            raise LeaseLost(
                f"{self.path}: the lease expired while held (no renewal for {self.ttl:g} s) "
                "and another worker took the job over"
            )

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
