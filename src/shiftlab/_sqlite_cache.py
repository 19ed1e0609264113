"""Key-value caches in SQLite that processes on several hosts can share.

SQLite's locking does not hold on NFS, the shared file system stores live on, so no two
hosts ever write one file: each host writes ``<stem>@<host>.sqlite`` beside the cache's
path and every process reads every file of the cache (its own first, then the others'
read-only, then ``<stem>.sqlite`` of stores from before per-host files). Processes on one
host share its file through SQLite's own locking. Each row carries a sha256 of its
values, so a damaged row is found rather than returned.

Damage in this host's file is a :class:`~shiftlab.errors.DamagedFile` (the process would
write into it); another host's file that cannot be read is skipped with a warning (a
cache miss costs only recomputation; ``shiftlab status --verify`` names the damage). A
full disk is an :class:`~shiftlab.errors.OutOfSpace`.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "judge.sqlite"
>>> SharedCache(path, "replies", ("reply",), host="node-a").put({"k1": ("YES",)})
>>> b = SharedCache(path, "replies", ("reply",), host="node-b")
>>> b.put({"k2": ("NO",)})
>>> b.get(["k1", "k2", "k3"])
{'k2': ('NO',), 'k1': ('YES',)}
>>> sorted(p.name for p in b.files())
['judge@node-a.sqlite', 'judge@node-b.sqlite']
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
import re
import sqlite3
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from shiftlab._files import naming_full_disk, structure_problem
from shiftlab.errors import DamagedFile, StoreError

# What to do about a damaged cache file: it holds only what can be computed again.
CACHE_REMEDY = "delete it: it only holds cached results, which the next run computes again"
HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", platform.node()) or "host"
# Rows asked for in one query (SQLite's limit on bound parameters is 999 in old builds).
QUERY_ROWS = 500
_DAMAGE_TEXTS = ("malformed", "not a database", "file is encrypted", "disk i/o error")


def _row_digest(values: Sequence[Any]) -> str:
    digest = hashlib.sha256()
    for value in values:
        data = value if isinstance(value, bytes) else str(value).encode()
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()[:32]


def _damaged(path: Path, problem: str) -> DamagedFile:
    return DamagedFile(f"{path}: damaged: {problem}; {CACHE_REMEDY}", path)


def _is_damage(error: sqlite3.Error) -> bool:
    return any(text in str(error).lower() for text in _DAMAGE_TEXTS)


def cache_files(path: Path) -> list[Path]:
    """Every file of the cache at ``path`` (each host's, and a single file from before
    per-host files), by name."""
    pattern = re.compile(rf"^{re.escape(path.stem)}(@[^/]+)?{re.escape(path.suffix)}$")
    found = path.parent.glob(f"{path.stem}*{path.suffix}") if path.parent.is_dir() else []
    return sorted(p for p in found if pattern.match(p.name))


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


class SharedCache:
    """Rows of ``columns`` keyed by text, in the SQLite files of the cache at ``path``
    (see the module docstring); ``host`` names this host's file (default: this machine).
    Safe to share between threads and processes."""

    def __init__(
        self, path: str | Path, table: str, columns: Sequence[str], *, host: str = HOST
    ) -> None:
        self.path = Path(path)
        self.table, self.columns = table, tuple(columns)
        self.writer = self.path.with_name(f"{self.path.stem}@{host}{self.path.suffix}")
        self._lock = threading.Lock()
        names = ", ".join(self.columns)
        with self._connect(self.writer) as db:
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, {names}, digest)"
            )

    def files(self) -> list[Path]:
        """Every file of the cache: this host's first, then the others by name."""
        return [self.writer, *(p for p in cache_files(self.path) if p != self.writer)]

    @contextlib.contextmanager
    def _connect(self, path: Path, *, read_only: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection to one file of the cache, in a transaction; SQLite's errors
        become one line naming the file."""
        try:
            with naming_full_disk(path):
                if not read_only:
                    path.parent.mkdir(parents=True, exist_ok=True)
                target = f"{path.resolve().as_uri()}?mode=ro" if read_only else str(path)
                with (
                    self._lock,
                    contextlib.closing(sqlite3.connect(target, timeout=60, uri=read_only)) as db,
                    db,
                ):
                    yield db
        except sqlite3.Error as error:
            if _is_damage(error):
                raise _damaged(path, f"not a readable SQLite database ({error})") from None
            raise StoreError(f"{path}: SQLite error: {error}") from None

    def _read(self, path: Path, keys: Sequence[str], found: dict[str, tuple[Any, ...]]) -> None:
        with self._connect(path, read_only=path != self.writer) as db:
            has_digest = "digest" in _columns(db, self.table)
            names = ", ".join((*self.columns, "digest" if has_digest else "NULL"))
            for start in range(0, len(keys), QUERY_ROWS):
                part = list(keys[start : start + QUERY_ROWS])
                marks = ",".join("?" * len(part))
                query = f"SELECT key, {names} FROM {self.table} WHERE key IN ({marks})"
                for key, *values, digest in db.execute(query, part):
                    if digest is not None and digest != _row_digest(values):
                        raise _damaged(path, f"the row for key {key} is not what was written")
                    found.setdefault(key, tuple(values))

    def get(self, keys: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """The rows held for ``keys`` (keys not cached are left out)."""
        found: dict[str, tuple[Any, ...]] = {}
        for path in self.files():
            missing = [k for k in keys if k not in found]
            if not missing:
                break
            if path == self.writer:
                self._read(path, missing, found)
                continue
            try:
                self._read(path, missing, found)
            except StoreError as error:
                warnings.warn(f"{error} (its rows are computed again)", stacklevel=2)
        return found

    def put(self, rows: dict[str, tuple[Any, ...]]) -> None:
        """Write ``rows`` (key -> values) to this host's file."""
        names = ", ".join(("key", *self.columns, "digest"))
        marks = ",".join("?" * (len(self.columns) + 2))
        with self._connect(self.writer) as db:
            db.executemany(
                f"INSERT OR REPLACE INTO {self.table} ({names}) VALUES ({marks})",
                [(key, *values, _row_digest(values)) for key, values in rows.items()],
            )


def cache_problem(path: Path, *, rows: bool = False) -> str | None:
    """What is wrong with one cache file, or None: it must be a whole SQLite database;
    with ``rows``, SQLite's own check must pass and every row match its digest."""
    problem = structure_problem(path)
    if problem is not None or not rows:
        return problem
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            (verdict,) = db.execute("PRAGMA quick_check(1)").fetchone()
            if verdict != "ok":
                return f"SQLite's check fails: {' '.join(verdict.split())}"
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                columns = _columns(db, table)
                if "digest" not in columns:
                    continue  # a cache from before rows carried digests
                values = [c for c in columns if c not in ("key", "digest")]
                query = f"SELECT key, {', '.join(values)}, digest FROM {table}"
                for key, *row, digest in db.execute(query):
                    if digest != _row_digest(row):
                        return f"the row for key {key} is not what was written"
    except sqlite3.Error as error:
        return f"not a readable SQLite database ({error})"
    return None


def copy_cache(source: Path, target: Path) -> None:
    """Copy every file of the cache at ``source`` (each host's) beside ``target``, each
    consistently (SQLite's backup)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for path in cache_files(source):
        copy = target.with_name(target.stem + path.name[len(source.stem) :])
        with naming_full_disk(copy):
            try:
                with (
                    contextlib.closing(sqlite3.connect(path)) as origin,
                    contextlib.closing(sqlite3.connect(copy)) as replica,
                ):
                    origin.backup(replica)
            except sqlite3.Error as error:
                raise _damaged(path, f"not a readable SQLite database ({error})") from None
