"""The artefact store: a folder of content-addressed, atomically written artefacts.

Layout (see DESIGN.md)::

    <store>/study.yaml                 the resolved spec
    <store>/manifest.json              versions, git revision, hardware, seeds
    <store>/<kind>/<id>/...            a directory artefact, finished once manifest.json exists
    <store>/tables/<name>.parquet      tables, written atomically
    <store>/builds.jsonl               one line per artefact built: which process, when

An artefact is built in a temporary sibling folder, its ``manifest.json`` (which records
every file's size and sha256) is written last, every file is fsynced and the folder is
renamed into place. A process killed half-way leaves only a ``.tmp-*`` folder, which the
next writer of that artefact removes. A lease per artefact lets several processes share
one store without doing work twice. Reading an artefact checks the sizes of all its files
and the sha256 of those it loads (:meth:`Store.verified`), so damage is named, never used.

>>> import tempfile
>>> store = Store.open(tempfile.mkdtemp())
>>> with store.artefact("organisms", "org-1", {"seed": 0}) as folder:
...     _ = (folder / "eval.txt").write_text("0.5")
>>> store.is_finished("organisms", "org-1")
True
>>> store.read_manifest("organisms", "org-1")["files"]["eval.txt"]["bytes"]
3
>>> _ = (store.path("organisms", "org-1") / "eval.txt").write_text("0.9")
>>> store.verified("organisms", "org-1")
Traceback (most recent call last):
...
shiftlab.errors.DamagedFile: .../eval.txt: damaged: its content is not what was written ...
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
from shiftlab._files import (
    atomic_write,
    atomic_write_bytes,
    file_problem,
    file_record,
    fsync_path,
    is_out_of_space,
    naming_full_disk,
    out_of_space,
    publish_dir,
    remove_path,
    sweep_temporaries,
    temporaries_of,
    temporary_sibling,
)
from shiftlab._hashing import content_hash
from shiftlab._lease import Lease, sweep
from shiftlab.errors import DamagedFile, StoreError

# 2: every evaluation (base, organism, run) carries a capability score (its manifest's
# "capability", capability.parquet) and the design table its capability columns.
STORE_FORMAT = 2
MANIFEST = "manifest.json"
BUILD_LOG = "builds.jsonl"
# Held while a table is written: one writer at a time in tables/, so it may sweep there.
TABLES_LEASE = ".tables.lease"
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
# What to do about a damaged table: tables are made from the artefacts at the end of a run.
TABLE_REMEDY = "rerun the study to write it again from the artefacts"
STUDY_REMEDY = "delete it and rerun the study: the spec writes it again (or run with --rebuild)"
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


def _files_below(folder: Path) -> list[str]:
    """Every file below ``folder`` but its manifest, as sorted relative POSIX paths."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST
    )


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


def _is_record(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("bytes"), int)
        and isinstance(record.get("sha256"), str)
    )


def _unreadable_parquet(error: BaseException) -> str:
    return f"not a readable parquet file ({str(error).splitlines()[0] if str(error) else error!r})"


def is_store(folder: Path) -> bool:
    """True when ``folder`` holds a shiftlab store (its ``study.yaml`` or manifest)."""
    return (folder / "study.yaml").is_file() or (folder / MANIFEST).is_file()


def _foreign_entries(folder: Path) -> list[str]:
    """Names in ``folder`` that no store writes (hidden names are leases, probes and
    temporaries of processes sharing a new store)."""
    ours = {*KINDS, *STORE_ENTRIES}
    return sorted(p.name for p in folder.iterdir() if p.name not in ours and p.name[0] != ".")


def open_store(root: str | os.PathLike[str]) -> Store:
    """The store at ``root`` (created when it does not exist; a non-empty folder that is
    not a store, or an unwritable one, is refused). Same as :meth:`Store.open`."""
    return Store.open(root)


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
            if is_out_of_space(error):
                raise out_of_space(path) from None
            raise StoreError(f"store {path} is not writable: {error.strerror or error}") from None
        store = cls(path)
        store._check_format()
        return store

    def _manifest(self) -> dict[str, Any]:
        """The store's own manifest (empty before the first run)."""
        path = self.root / MANIFEST
        if not path.exists():
            return {}
        try:
            manifest = json.loads(path.read_bytes())
        except (OSError, ValueError) as error:
            raise DamagedFile(
                f"{path}: damaged: not a readable store manifest ({error}); delete it and "
                "rerun the study, which writes it again",
                path,
            ) from None
        if not isinstance(manifest, dict):
            raise DamagedFile(f"{path}: damaged: not a store manifest (not a JSON object)", path)
        return manifest

    def study_problem(self) -> str | None:
        """What is wrong with ``study.yaml`` against the study hash the store's manifest
        records, or None (also when either is missing)."""
        recorded = self._manifest().get("study_hash")
        study = self.root / "study.yaml"
        if recorded is None or not study.is_file():
            return None
        try:
            text = study.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            return f"not UTF-8 text ({error.reason} at byte {error.start})"
        if content_hash(text) != recorded:
            return "its content is not what was written (manifest.json records another hash)"
        return None

    def _check_format(self) -> None:
        manifest = self.root / MANIFEST
        if not manifest.exists():
            return
        found = self._manifest().get("store_format")
        if not isinstance(found, int):
            raise StoreError(f"{manifest}: no store_format; not a shiftlab store manifest")
        if found > STORE_FORMAT:
            raise StoreError(
                f"{manifest}: store format {found!r} is newer than this shiftlab "
                f"understands ({STORE_FORMAT}); upgrade shiftlab"
            )
        if found < STORE_FORMAT:
            raise StoreError(
                f"{manifest}: store format {found!r} predates this shiftlab's "
                f"({STORE_FORMAT}: evaluations score capability beside the behaviour); run "
                "the study into a new store"
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
        """The committed manifest of a finished artefact; a manifest that cannot be read is
        a :class:`~shiftlab.errors.DamagedFile` saying how to rebuild the artefact."""
        path = self.manifest_path(kind, artefact_id)
        if not path.is_file():
            raise StoreError(f"artefact {kind}/{artefact_id} is not finished in {self.root}")
        try:
            manifest = json.loads(path.read_bytes())
        except (OSError, ValueError) as error:
            raise self.damaged(
                kind, artefact_id, path, f"not a readable manifest ({error})"
            ) from None
        files = manifest.get("files", []) if isinstance(manifest, dict) else None
        if not isinstance(files, (list, dict)) or (
            isinstance(files, dict) and not all(_is_record(r) for r in files.values())
        ):
            raise self.damaged(kind, artefact_id, path, "not a manifest shiftlab writes")
        result: dict[str, Any] = manifest
        return result

    def damaged(self, kind: str, artefact_id: str, path: Path, problem: str) -> DamagedFile:
        """The one-line error for a damaged file of an artefact: what is wrong, and how to
        have it rebuilt."""
        where = " and ".join(str(p) for p in self.artefact_paths(kind, artefact_id))
        return DamagedFile(
            f"{path}: damaged: {problem}; delete {where} to rebuild it, or run the study "
            "with --rebuild",
            path,
        )

    def artefact_paths(self, kind: str, artefact_id: str) -> tuple[Path, ...]:
        """What an artefact occupies: its folder, or its file and its manifest."""
        if kind in FILE_KINDS:
            return (self.path(kind, artefact_id), self.manifest_path(kind, artefact_id))
        return (self.path(kind, artefact_id),)

    def file_records(self, kind: str, artefact_id: str) -> dict[str, dict[str, Any] | None]:
        """Each file of a finished artefact (relative to :meth:`files_base`) with its
        recorded size and sha256; None for an artefact written before manifests held
        them (stores from before manifests listed their files: the files there now)."""
        files = self.read_manifest(kind, artefact_id).get("files")
        if isinstance(files, dict):
            return files
        if files is None:
            final = self.path(kind, artefact_id)
            files = [final.name] if kind in FILE_KINDS else _files_below(final)
        return dict.fromkeys(files)

    def files_base(self, kind: str, artefact_id: str) -> Path:
        """The folder an artefact's manifest names its files relative to."""
        return self._kind_dir(kind) if kind in FILE_KINDS else self.path(kind, artefact_id)

    def _checked(self, kind: str, artefact_id: str, hashed: Callable[[str], bool]) -> list[Path]:
        base = self.files_base(kind, artefact_id)
        paths = []
        for name, record in self.file_records(kind, artefact_id).items():
            problem = file_problem(base / name, record, hashed=hashed(name))
            if problem is not None:
                raise self.damaged(kind, artefact_id, base / name, problem)
            paths.append(base / name)
        return paths

    def data_files(self, kind: str, artefact_id: str) -> list[Path]:
        """The files a finished artefact's manifest lists, checked to exist with their
        recorded sizes.

        Raises :class:`~shiftlab.errors.DamagedFile` naming the first file that is missing
        or has another size: such an artefact cannot be trusted or re-executed.
        """
        return self._checked(kind, artefact_id, lambda name: False)

    def verified(self, kind: str, artefact_id: str, member: str = "") -> Path:
        """The path of a finished artefact, or of ``member`` in it (a file or a folder),
        for loading: every file of the artefact is checked for its recorded size, and
        every file at or under ``member`` (all of them when it is empty) for its sha256.
        Raises :class:`~shiftlab.errors.DamagedFile` naming the first damaged file."""
        prefix = member.rstrip("/") + "/"
        self._checked(
            kind, artefact_id, lambda n: not member or n == member or n.startswith(prefix)
        )
        return (
            self.files_base(kind, artefact_id) / member if member else self.path(kind, artefact_id)
        )

    def read_parquet(
        self, kind: str, artefact_id: str, member: str = "", columns: list[str] | None = None
    ) -> pl.DataFrame:
        """A verified parquet file of a finished artefact (``member`` of a folder
        artefact, or a file artefact itself), read with polars."""
        path = self.verified(kind, artefact_id, member)
        try:
            return pl.read_parquet(path, columns=columns)
        except (pl.exceptions.PolarsError, OSError) as error:
            raise self.damaged(kind, artefact_id, path, _unreadable_parquet(error)) from None

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
        normal exit the result is fsynced and renamed into place and ``manifest``, with
        every file's size and sha256 under ``files``, is committed last. On any exception
        (or a kill) nothing finished-looking is left; a full disk is an
        :class:`~shiftlab.errors.OutOfSpace` naming the artefact and the free space.
        """
        final = self.path(kind, artefact_id)
        with naming_full_disk(final), self.lock(kind, artefact_id) as lease:
            for stale in temporaries_of(final):
                remove_path(stale)
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
                    manifest = {**manifest, "files": {final.name: file_record(tmp)}}
                    fsync_path(tmp)
                    os.replace(tmp, final)
                    atomic_write_bytes(
                        self.manifest_path(kind, artefact_id),
                        json.dumps(manifest, indent=2, sort_keys=True).encode(),
                    )
                else:
                    files = {name: file_record(tmp / name) for name in _files_below(tmp)}
                    manifest = {**manifest, "files": files}
                    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
                    if final.exists():  # an unfinished leftover without a manifest
                        shutil.rmtree(final)
                    publish_dir(tmp, final)
            except BaseException:
                remove_path(tmp)
                raise
        with naming_full_disk(self.root / BUILD_LOG):
            self._log_build(kind, artefact_id)

    def remove(self, kind: str, artefact_id: str) -> None:
        """Delete an artefact under its lease, its manifest first: it is never left
        finished-looking and incomplete."""
        with self.lock(kind, artefact_id):
            self.manifest_path(kind, artefact_id).unlink(missing_ok=True)
            for path in self.artefact_paths(kind, artefact_id):
                remove_path(path)

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

    def table_manifest_path(self, name: str) -> Path:
        """Where table ``name``'s size and sha256 are recorded: ``tables/<name>.manifest.json``."""
        return self.root / "tables" / f"{validate_id(name)}.{MANIFEST}"

    def write_table(self, name: str, frame: pl.DataFrame) -> Path:
        """Write ``tables/<name>.parquet`` atomically, its record first, and return its
        path; under the tables' lease, which lets it sweep what killed writers left there."""
        path = self.table_path(name)

        def write(tmp: Path) -> None:
            frame.write_parquet(tmp)
            record = json.dumps({"files": {path.name: file_record(tmp)}}, indent=2)
            atomic_write_bytes(self.table_manifest_path(name), record.encode())

        with naming_full_disk(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        lease_path = str(path.parent / TABLES_LEASE)
        with self._locks.setdefault(lease_path, Lease(lease_path)):
            sweep_temporaries(path.parent)
            atomic_write(path, write)
        return path

    def table_problem(self, name: str) -> str | None:
        """What is wrong with table ``name`` against its record (a table written before
        tables had records is checked for being a whole parquet file), or None."""
        path, record_path = self.table_path(name), self.table_manifest_path(name)
        record = None
        if record_path.is_file():
            try:
                record = json.loads(record_path.read_bytes())["files"][path.name]
            except (OSError, ValueError, KeyError, TypeError) as error:
                return f"its record {record_path} is not readable ({error!r})"
            if not _is_record(record):
                return f"its record {record_path} is not one shiftlab writes"
        return file_problem(path, record)

    def read_table(self, name: str) -> pl.DataFrame:
        """Read ``tables/<name>.parquet``, verified against its record."""
        path = self.table_path(name)
        if not path.is_file():
            raise StoreError(f"{path}: no such table; has the study run?")
        problem = self.table_problem(name)
        try:
            if problem is None:
                return pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as error:
            problem = _unreadable_parquet(error)
        raise DamagedFile(f"{path}: damaged: {problem}; {TABLE_REMEDY}", path)

    def write_study(self, spec_yaml: str, seeds: dict[str, int]) -> None:
        """Record the resolved spec and the store manifest.

        A store holds one study: a different spec is refused rather than overwritten (a
        deleted ``study.yaml`` too, by the study hash in the store's manifest).
        """
        current = self.root / "study.yaml"
        recorded = self._manifest().get("study_hash")
        if current.is_file() and current.read_bytes() != spec_yaml.encode():
            problem = self.study_problem()
            if problem is not None:
                raise DamagedFile(f"{current}: damaged: {problem}; {STUDY_REMEDY}", current)
            recorded = "a different study"
        if recorded is not None and recorded != content_hash(spec_yaml):
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
