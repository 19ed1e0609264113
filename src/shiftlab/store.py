"""The artefact store: a folder of content-addressed, atomically written artefacts.

Layout (see DESIGN.md)::

    <store>/study.yaml                 the resolved spec
    <store>/manifest.json              versions, git revision, hardware, seeds
    <store>/<kind>/<id>/...            a directory artefact, finished once manifest.json exists
    <store>/tables/<name>.parquet      tables, written atomically
    <store>/builds.jsonl               one line per artefact built: which process, when

An artefact is built in a temporary sibling folder, its ``manifest.json`` is written last,
every file is fsynced and the folder is renamed into place. A process killed half-way
leaves only a ``.tmp-*`` folder, which the next writer of that artefact removes. A file
lock per artefact lets several processes share one store without doing work twice.

>>> import tempfile
>>> store = Store.open(tempfile.mkdtemp())
>>> with store.artefact("organisms", "org-1", {"seed": 0}) as folder:
...     _ = (folder / "eval.txt").write_text("0.5")
>>> store.is_finished("organisms", "org-1")
True
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab._environment import environment_info
from shiftlab._hashing import content_hash
from shiftlab._lease import Lease, sweep
from shiftlab.errors import StoreError

STORE_FORMAT = 1
MANIFEST = "manifest.json"
BUILD_LOG = "builds.jsonl"
KINDS = (
    "organisms",
    "base_evals",
    "pools",
    "runs",
    "samples",
    "shift",
    "embeddings",
    "attribution",
)
# Kinds whose artefact is one file ``<kind>/<id><suffix>`` with ``<id>.manifest.json`` beside it.
# The study's tables (``tables/<name>.parquet``): one row per organism, and the design table.
ORGANISM_TABLE = "organisms"
RUNS_TABLE = "runs"
FILE_KINDS = {"pools": ".parquet", "samples": ".parquet", "shift": ".parquet"}
# What else a store holds beside its artefact kinds (see the layout above).
STORE_ENTRIES = ("tables", "cache", "figures", "repro", "report.html", "report.md", BUILD_LOG)
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")


def validate_id(artefact_id: str) -> str:
    """Return ``artefact_id`` if it is a safe single path component, else raise.

    >>> validate_id("org-1a2b")
    'org-1a2b'
    >>> validate_id("../etc")
    Traceback (most recent call last):
    ...
    shiftlab.errors.StoreError: invalid artefact id '../etc': ...
    """
    if (
        not isinstance(artefact_id, str)
        or not _ID_PATTERN.match(artefact_id)
        or ".." in artefact_id
    ):
        raise StoreError(
            f"invalid artefact id {artefact_id!r}: use letters, digits, '_', '-' and '.', "
            "no path separators, at most 200 characters"
        )
    return artefact_id


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file() or path.is_dir():
            _fsync_path(path)
    _fsync_path(root)


def temporary_sibling(final: Path) -> Path:
    """A fresh temporary path beside ``final``: ``.tmp-<name>-<8 hex>``."""
    return final.with_name(f".tmp-{final.name}-{uuid.uuid4().hex[:8]}")


def _temporaries_of(final: Path) -> list[Path]:
    pattern = re.compile(rf"^\.tmp-{re.escape(final.name)}-[0-9a-f]{{8}}$")
    return [p for p in final.parent.glob(f".tmp-{final.name}-*") if pattern.match(p.name)]


def _files_below(folder: Path) -> list[str]:
    """Every file below ``folder`` but its manifest, as sorted relative POSIX paths."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST
    )


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def publish_dir(tmp: Path, final: Path) -> None:
    """Rename a finished folder into place; if another process got there first, keep theirs."""
    _fsync_tree(tmp)
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return
    _fsync_path(final.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)``, fsync the result and rename it to ``path``.

    If ``write`` fails, the temporary file is removed and ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_path(path.parent)


def build_manifest(config: dict[str, Any], seeds: dict[str, int], **extra: Any) -> dict[str, Any]:
    """A manifest for one artefact: its resolved config and its hash, seeds and environment."""
    return {
        "store_format": STORE_FORMAT,
        "config": config,
        "config_hash": content_hash(config),
        "seeds": seeds,
        **environment_info(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def is_store(folder: Path) -> bool:
    """True when ``folder`` holds a shiftlab store (its ``study.yaml`` or manifest)."""
    return (folder / "study.yaml").is_file() or (folder / MANIFEST).is_file()


def _foreign_entries(folder: Path) -> list[str]:
    """Names in ``folder`` that no store writes (hidden names are leases, probes and
    temporaries of processes sharing a new store)."""
    ours = {*KINDS, *STORE_ENTRIES}
    return sorted(p.name for p in folder.iterdir() if p.name not in ours and p.name[0] != ".")


class Store:
    """A folder of artefacts. Use :meth:`open`, which checks the folder is writable."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # One lease object per file: a lease is re-entrant, two on one file are not.
        self._locks: dict[str, Lease] = {}

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> Store:
        """Open (creating if needed) the store at ``root``; raise if it cannot be written.

        A store is a folder of its own: the root of a file system, or a non-empty folder
        that holds no shiftlab store, is refused rather than written into.
        """
        path = Path(root).expanduser()
        if path.exists() and not path.is_dir():
            raise StoreError(f"store {path} is a file, expected a folder")
        resolved = path.resolve()
        if resolved == Path(resolved.anchor) or os.path.ismount(resolved):
            raise StoreError(
                f"store {path} is the root of a file system; use a new folder inside it"
            )
        foreign = [] if not path.is_dir() or is_store(path) else _foreign_entries(path)
        if foreign:
            raise StoreError(
                f"store {path} is a non-empty folder but not a shiftlab store (no study.yaml "
                f"or {MANIFEST}; it holds {foreign[0]!r}); use a new or empty folder"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".probe-{uuid.uuid4().hex[:8]}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise StoreError(f"store {path} is not writable: {error.strerror or error}") from None
        store = cls(path)
        store._check_format()
        return store

    def _check_format(self) -> None:
        manifest = self.root / MANIFEST
        if not manifest.exists():
            return
        try:
            found = json.loads(manifest.read_text()).get("store_format")
        except (OSError, json.JSONDecodeError) as error:
            raise StoreError(f"{manifest}: unreadable store manifest ({error})") from None
        if not isinstance(found, int):
            raise StoreError(f"{manifest}: no store_format; not a shiftlab store manifest")
        if found > STORE_FORMAT:
            raise StoreError(
                f"{manifest}: store format {found!r} is newer than this shiftlab "
                f"understands ({STORE_FORMAT}); upgrade shiftlab"
            )

    # -- paths ---------------------------------------------------------------------------

    def _kind_dir(self, kind: str) -> Path:
        if kind not in KINDS:
            raise StoreError(f"unknown artefact kind {kind!r}; expected one of {', '.join(KINDS)}")
        return self.root / kind

    def path(self, kind: str, artefact_id: str) -> Path:
        """The folder (or, for pools, the file) of an artefact; it may not exist yet."""
        return self._kind_dir(kind) / (validate_id(artefact_id) + FILE_KINDS.get(kind, ""))

    def manifest_path(self, kind: str, artefact_id: str) -> Path:
        """Where the artefact's manifest is once it is finished."""
        if kind in FILE_KINDS:
            return self._kind_dir(kind) / f"{validate_id(artefact_id)}.{MANIFEST}"
        return self.path(kind, artefact_id) / MANIFEST

    def is_finished(self, kind: str, artefact_id: str) -> bool:
        """True once the artefact's manifest has been committed."""
        return self.manifest_path(kind, artefact_id).is_file()

    def read_manifest(self, kind: str, artefact_id: str) -> dict[str, Any]:
        """The committed manifest of a finished artefact."""
        path = self.manifest_path(kind, artefact_id)
        if not path.is_file():
            raise StoreError(f"artefact {kind}/{artefact_id} is not finished in {self.root}")
        result: dict[str, Any] = json.loads(path.read_text())
        return result

    def data_files(self, kind: str, artefact_id: str) -> list[Path]:
        """The files a finished artefact's manifest lists, checked to exist.

        Raises :class:`StoreError` naming the first missing file: an artefact whose files
        went missing after it was finished cannot be trusted or re-executed.
        """
        manifest = self.read_manifest(kind, artefact_id)
        if "files" not in manifest:  # stores written before manifests listed their files
            final = self.path(kind, artefact_id)
            names = [final.name] if kind in FILE_KINDS else _files_below(final)
        else:
            names = manifest["files"]
        base = self.root / kind if kind in FILE_KINDS else self.path(kind, artefact_id)
        paths = [base / name for name in names]
        for path in paths:
            if not path.is_file():
                raise StoreError(
                    f"{self.manifest_path(kind, artefact_id)} lists "
                    f"{path.relative_to(base).as_posix()} but {path} is missing; delete the "
                    "artefact and rerun the study to rebuild it"
                )
        return paths

    def finished_ids(self, kind: str) -> list[str]:
        """Ids of every finished artefact of ``kind``, sorted."""
        folder = self._kind_dir(kind)
        if not folder.is_dir():
            return []
        if kind in FILE_KINDS:
            suffix = f".{MANIFEST}"
            return sorted(p.name[: -len(suffix)] for p in folder.glob(f"[!.]*{suffix}"))
        return sorted(
            p.name
            for p in folder.iterdir()
            if not p.name.startswith(".") and (p / MANIFEST).is_file()
        )

    # -- writing -------------------------------------------------------------------------

    def lock(self, kind: str, artefact_id: str) -> Lease:
        """The lease on one artefact (hold it while building the artefact): a file
        ``<kind>/.<id>.lease`` with its owner and expiry, so workers on several hosts can
        share the store (see :mod:`shiftlab._lease`)."""
        folder = self._kind_dir(kind)
        folder.mkdir(parents=True, exist_ok=True)
        path = str(folder / f".{validate_id(artefact_id)}.lease")
        return self._locks.setdefault(path, Lease(path))

    def sweep_leases(self) -> int:
        """Remove what killed workers left of their leases (dead or expired holders,
        stale lease temporaries); returns how many files went."""
        return sum(sweep(self.root / kind) for kind in KINDS if (self.root / kind).is_dir())

    @contextlib.contextmanager
    def artefact(self, kind: str, artefact_id: str, manifest: dict[str, Any]) -> Iterator[Path]:
        """Build an artefact atomically.

        Yields a temporary folder to write into (for pools: a temporary file path). On
        normal exit the result is fsynced and renamed into place and ``manifest`` is
        committed last. On any exception (or a kill) nothing finished-looking is left.
        """
        final = self.path(kind, artefact_id)
        with self.lock(kind, artefact_id) as lease:
            for stale in _temporaries_of(final):
                _remove(stale)
            if self.is_finished(kind, artefact_id):
                raise StoreError(f"artefact {kind}/{artefact_id} is already finished")
            tmp = temporary_sibling(final)
            if kind not in FILE_KINDS:
                tmp.mkdir(parents=True)
            try:
                yield tmp
                lease.check()  # a worker that stalled past its lease must not publish
                if self.is_finished(kind, artefact_id):  # never replace finished work
                    raise StoreError(f"artefact {kind}/{artefact_id} was finished meanwhile")
                if kind in FILE_KINDS:
                    if not tmp.is_file():
                        raise StoreError(f"artefact {kind}/{artefact_id}: nothing was written")
                    _fsync_path(tmp)
                    os.replace(tmp, final)
                    manifest = {**manifest, "files": [final.name]}
                    atomic_write_bytes(
                        self.manifest_path(kind, artefact_id),
                        json.dumps(manifest, indent=2, sort_keys=True).encode(),
                    )
                else:
                    manifest = {**manifest, "files": _files_below(tmp)}
                    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
                    if final.exists():  # an unfinished leftover without a manifest
                        shutil.rmtree(final)
                    publish_dir(tmp, final)
            except BaseException:
                _remove(tmp)
                raise
            self._log_build(kind, artefact_id)

    def _log_build(self, kind: str, artefact_id: str) -> None:
        # One short O_APPEND write per line: lines from concurrent workers never interleave.
        line = {
            "kind": kind,
            "artefact_id": artefact_id,
            "host": platform.node(),
            "pid": os.getpid(),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
        fd = os.open(self.root / BUILD_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)

    def builds(self) -> pl.DataFrame:
        """Every artefact built into this store, in order: kind, id, host, pid, time."""
        schema = {
            "kind": pl.String,
            "artefact_id": pl.String,
            "host": pl.String,
            "pid": pl.Int64,
            "finished_at": pl.String,
        }
        path = self.root / BUILD_LOG
        if not path.is_file():
            return pl.DataFrame(schema=schema)
        return pl.read_ndjson(path, schema=schema)

    def table_path(self, name: str) -> Path:
        """Where table ``name`` lives: ``tables/<name>.parquet``."""
        return self.root / "tables" / f"{validate_id(name)}.parquet"

    def write_table(self, name: str, frame: pl.DataFrame) -> Path:
        """Write ``tables/<name>.parquet`` atomically and return its path."""
        path = self.table_path(name)
        atomic_write(path, frame.write_parquet)
        return path

    def read_table(self, name: str) -> pl.DataFrame:
        """Read ``tables/<name>.parquet``."""
        path = self.table_path(name)
        if not path.is_file():
            raise StoreError(f"{path}: no such table; has the study run?")
        return pl.read_parquet(path)

    def write_study(self, spec_yaml: str, seeds: dict[str, int]) -> None:
        """Record the resolved spec and the store manifest.

        A store holds one study: a different spec is refused rather than overwritten.
        """
        current = self.root / "study.yaml"
        if current.is_file() and current.read_text() != spec_yaml:
            raise StoreError(
                f"{self.root} holds a different study (its study.yaml differs from this spec); "
                "use a new store folder"
            )
        atomic_write_bytes(self.root / "study.yaml", spec_yaml.encode())
        manifest = {
            "store_format": STORE_FORMAT,
            "study_hash": content_hash(spec_yaml),
            "seeds": seeds,
            **environment_info(),
        }
        atomic_write_bytes(self.root / MANIFEST, json.dumps(manifest, indent=2).encode())
