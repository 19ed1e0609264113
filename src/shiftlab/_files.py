"""Files as shiftlab writes and reads them: a record of each (its size and sha256), what is
wrong with a file that does not match its record or is not whole, and the one line a
full disk gets.

A file's sha256 is computed once per process for each version of the file (memoised on
its device, inode, size and modification time; a rename keeps all four), so a study that
loads one adapter in many jobs hashes it once, and a file hashed as it was written is not
hashed again when that process reads it back.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
>>> _ = path.write_bytes(b"shiftlab")
>>> record = file_record(path)
>>> record["bytes"], file_problem(path, record) is None
(8, True)
>>> _ = path.write_bytes(b"shiftlaB")
>>> file_problem(path, record)
'its content is not what was written (sha256 ... where its manifest records ...)'
>>> _ = path.write_bytes(b"shift")
>>> file_problem(path, record)
'5 bytes where its manifest records 8 (truncated?)'
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import sqlite3
import struct
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shiftlab.errors import OutOfSpace

# sha256 by file version: (device, inode, size, mtime in ns).
_DIGESTS: dict[tuple[int, int, int, int], str] = {}
SQLITE_HEADER = b"SQLite format 3\x00"
# How the libraries shiftlab writes with say that the disk is full, when they give no errno:
# polars and safetensors (Rust's io::Error), SQLite.
_FULL_DISK_TEXTS = ("no space left on device", "os error 28", "disk quota exceeded",
                    "os error 122", "database or disk is full")  # fmt: skip


def _version(stat: os.stat_result) -> tuple[int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes, computed once per version of the file."""
    before = os.stat(path)
    found = _DIGESTS.get(_version(before))
    if found is not None:
        return found
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    found = digest.hexdigest()
    if _version(os.stat(path)) == _version(before):  # not changed while it was read
        _DIGESTS[_version(before)] = found
    return found


def file_record(path: Path) -> dict[str, Any]:
    """What a manifest records of a file: ``{"bytes": size, "sha256": hex digest}``."""
    return {"bytes": path.stat().st_size, "sha256": sha256_of(path)}


def file_problem(path: Path, record: dict[str, Any] | None, *, hashed: bool = True) -> str | None:
    """What is wrong with ``path`` against its ``record`` (None when it is fine).

    The size is always compared; the sha256 only when ``hashed``. A file with no record
    (written before manifests held them) is checked for being whole by its kind instead
    (:func:`structure_problem`), when ``hashed``.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if not path.is_file():
        return "is not a file"
    if record is None:
        return structure_problem(path) if hashed else None
    if size != record.get("bytes"):
        return f"{size} bytes where its manifest records {record.get('bytes')} (truncated?)"
    if hashed and sha256_of(path) != record.get("sha256"):
        return (
            f"its content is not what was written (sha256 {sha256_of(path)[:12]} where its "
            f"manifest records {str(record.get('sha256'))[:12]})"
        )
    return None


def structure_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole file of its kind (by suffix: parquet, safetensors, JSON,
    SQLite), or None. Catches truncation and a damaged header; only a recorded sha256
    catches bytes changed inside."""
    checks = {
        ".parquet": _parquet_problem,
        ".safetensors": _safetensors_problem,
        ".json": _json_problem,
        ".sqlite": _sqlite_problem,
    }
    check = checks.get(path.suffix)
    try:
        return check(path) if check else None
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"


def _parquet_problem(path: Path) -> str | None:
    data = path.read_bytes()
    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        return "not a whole parquet file (no PAR1 marker at its start and end)"
    (footer,) = struct.unpack("<I", data[-8:-4])
    if footer > len(data) - 12:
        return "not a whole parquet file (its footer runs past the start)"
    return None


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        (length,) = struct.unpack("<Q", head) if len(head) == 8 else (size,)
        if length > size - 8:
            return "not a whole safetensors file (its header runs past the end)"
        try:
            header = json.loads(handle.read(length))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"),
                      default=0)  # fmt: skip
        except (ValueError, TypeError, KeyError, IndexError):
            return "not a safetensors file (its header is not the JSON safetensors writes)"
    if 8 + length + end != size:
        return (
            f"not a whole safetensors file ({size} bytes; its header describes {8 + length + end})"
        )
    return None


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as error:
        return f"not valid JSON ({error})"
    return None


def _sqlite_problem(path: Path) -> str | None:
    size = path.stat().st_size
    if size == 0:
        return None  # SQLite creates a database file empty
    with open(path, "rb") as handle:
        head = handle.read(18)
    if len(head) < 18 or head[:16] != SQLITE_HEADER:
        return "not an SQLite database (its header is damaged)"
    (page,) = struct.unpack(">H", head[16:18])
    page = 65536 if page == 1 else page
    if page < 512 or size % page:
        return f"not a whole SQLite database ({size} bytes is not a whole number of pages)"
    return None


# -- writing atomically ----------------------------------------------------------------


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's) data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and folder below ``root``, and ``root``."""
    for path in root.rglob("*"):
        if path.is_file() or path.is_dir():
            fsync_path(path)
    fsync_path(root)


def temporary_sibling(final: Path) -> Path:
    """A fresh temporary path beside ``final``: ``.tmp-<name>-<8 hex>``."""
    return final.with_name(f".tmp-{final.name}-{uuid.uuid4().hex[:8]}")


def temporaries_of(final: Path) -> list[Path]:
    """The temporaries :func:`temporary_sibling` made for ``final`` (not those of a
    longer name that starts the same)."""
    pattern = re.compile(rf"^\.tmp-{re.escape(final.name)}-[0-9a-f]{{8}}$")
    return [p for p in final.parent.glob(f".tmp-{final.name}-*") if pattern.match(p.name)]


_TEMPORARY = re.compile(r"^\.tmp-.+-[0-9a-f]{8}$")


def sweep_temporaries(folder: Path) -> int:
    """Remove every temporary :func:`temporary_sibling` made in ``folder`` (what killed
    writers left); returns how many went. Call it only while no one else writes there
    (under the folder's lease)."""
    found = (
        [p for p in folder.glob(".tmp-*") if _TEMPORARY.match(p.name)] if folder.is_dir() else []
    )
    for path in found:
        remove_path(path)
    return len(found)


def remove_path(path: Path) -> None:
    """Remove a file or a folder, if it is there."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def publish_dir(tmp: Path, final: Path) -> None:
    """Rename a finished folder into place; if another process got there first, keep theirs."""
    fsync_tree(tmp)
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return
    fsync_path(final.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)``, fsync the result and rename it to ``path``.

    If ``write`` fails, the temporary file is removed and ``path`` is untouched; a full
    disk is an :class:`~shiftlab.errors.OutOfSpace` naming ``path`` and the free space.
    """
    tmp = temporary_sibling(path)
    with naming_full_disk(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write(tmp)
            fsync_path(tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    fsync_path(path.parent)


# -- a full disk ----------------------------------------------------------------------------


def is_out_of_space(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) says the file system is full."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(cause, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        if any(text in str(cause).lower() for text in _FULL_DISK_TEXTS):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def free_space(path: Path) -> str:
    """How much space is free on the file system holding ``path``: ``'12.0 KiB free on
    /mnt'``."""
    folder = Path(os.path.abspath(path))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    mount = folder
    while not os.path.ismount(mount):
        mount = mount.parent
    return f"{_size(shutil.disk_usage(folder).free)} free on {mount}"


def out_of_space(path: Path) -> OutOfSpace:
    """The one-line error for a write to ``path`` that found the disk full."""
    return OutOfSpace(
        f"{path}: no space left on the device ({free_space(path)}); free some space or move "
        "the store, then rerun: finished artefacts are kept"
    )


@contextlib.contextmanager
def naming_full_disk(path: Path) -> Iterator[None]:
    """Within the block, an error that says the disk is full becomes :func:`out_of_space`
    for ``path``; other errors pass unchanged."""
    try:
        yield
    except OutOfSpace:
        raise
    except Exception as error:
        if not is_out_of_space(error):
            raise
        raise out_of_space(path) from error
