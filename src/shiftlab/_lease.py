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

from shiftlab._files import naming_full_disk
from shiftlab.errors import StoreError

# How long a lease lives without renewal (``SHIFTLAB_LEASE_SECONDS``, read when a lease is
# made: a worker forked from a long-lived server has its creator's environment, not the
# server's, by then); renewed every third of it.
DEFAULT_LEASE_SECONDS = 60.0


def lease_seconds() -> float:
    """``$SHIFTLAB_LEASE_SECONDS``, else 60."""
    return float(os.environ.get("SHIFTLAB_LEASE_SECONDS", DEFAULT_LEASE_SECONDS))


POLL_SECONDS = 0.2
HOST = platform.node()


class LeaseLost(StoreError):
    """A lease expired while held (its holder stalled) and another worker took it over."""


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


BOOT = _boot_id()


def _process(pid: int) -> tuple[str, str] | None:
    """(state, start time) of ``pid`` from /proc, None when there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], fields[19]


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against a reused pid), if /proc has it."""
    found = _process(pid)
    return found[1] if found else None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads(path.read_text())
        return record
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written right now, or damaged: see _unreadable_expired


def _dead_here(record: dict[str, Any]) -> bool:
    """True when the holder was a process on this very machine (same host name and boot)
    that is gone, a zombie, or replaced by another process with its pid."""
    pid = record.get("pid")
    if record.get("host") != HOST or not isinstance(pid, int):
        return False
    if BOOT is None or record.get("boot") != BOOT:
        return False  # another machine with this name, or no /proc: wait for expiry
    found = _process(pid)
    return found is None or found[0] == "Z" or found[1] != record.get("started")


def _unreadable_expired(path: Path, ttl: float) -> bool:
    """A lease file that cannot be parsed (a writer died mid-write, a full disk) counts as
    expired once it has not changed for ``ttl``."""
    try:
        return time.time() - path.stat().st_mtime > ttl
    except OSError:
        return False


def sweep(folder: Path, ttl: float | None = None) -> int:
    """Remove leftovers of killed workers in ``folder``: lease files whose holder is dead
    or whose lease expired, and lease temporaries (``.tmp``/``.stale``) older than the
    lease time. Returns how many files went."""
    ttl = lease_seconds() if ttl is None else ttl
    removed = 0
    for path in folder.glob(".*.lease*"):
        record = _read(path) if path.name.endswith(".lease") else {}
        if record:
            gone = record.get("expires", 0) < time.time() or _dead_here(record)
        else:  # an unreadable lease, or a temporary: judged by age
            gone = record == {} and _unreadable_expired(path, ttl)
        if gone:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


class Lease:
    """A re-entrant claim on ``path``; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str], ttl: float | None = None) -> None:
        self.path = Path(path)
        self.ttl = lease_seconds() if ttl is None else ttl
        self.token = uuid.uuid4().hex
        self._depth = 0
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._expires = 0.0
        self.lost = False

    # -- the lease file ------------------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        self._expires = time.time() + self.ttl
        return {
            "host": HOST,
            "boot": BOOT,
            "pid": os.getpid(),
            "started": _start_time(os.getpid()),
            "token": self.token,
            "expires": self._expires,
        }

    def _write_private(self) -> Path:
        tmp = self.path.with_name(f"{self.path.name}.{self.token}.tmp")
        try:
            tmp.write_text(json.dumps(self._record()))
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk may leave it empty
            raise
        return tmp

    def _create(self) -> bool:
        with naming_full_disk(self.path):
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
            if _unreadable_expired(self.path, self.ttl):
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            return False
        if seen.get("token") == self.token:
            return True
        if seen.get("expires", 0) < time.time() or _dead_here(seen):
            return self._take_over(seen)
        return False

    # -- holding -------------------------------------------------------------------------

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                current = _read(self.path)
                if current is None or (current and current.get("token") != self.token):
                    self.lost = True
                    return
                tmp = self._write_private()
                os.replace(tmp, self.path)
            except OSError:
                self.lost = True  # a lease that cannot be renewed will be taken over
                return

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
        """Raise :class:`LeaseLost` unless this lease is still ours and unexpired (read
        from the file now, not only as the renewer last saw it)."""
        current = _read(self.path)
        if not current or current.get("token") != self.token:
            self.lost = True
        if time.time() > self._expires - POLL_SECONDS:
            self.lost = True  # stalled past the expiry: a taker may be building already
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
