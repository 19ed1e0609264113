"""Records of finished work, so that a rerun with nothing to do reads a few small files and
loads no model (nor torch).

A record is a JSON file beside what it describes, holding a content hash of the inputs the
work was built from; it is written last and atomically, and removed before the work is
rebuilt, so a missing, unreadable or different record always means "build it again".

- The report (``.report.json`` in the report's folder): a hash of the tables it reads, the
  finished pools, the store's manifest as the report shows it, its parameters and the
  code, and the size and sha256 of every file it wrote.
- A finished study (``tables/.study.json``): a hash of the spec and the code, every
  artefact the study planned, the tables it wrote, and the files outside the store that
  planning read (sizes and modification times), so a changed dataset or base model is work.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> read_record(folder / ".report.json") is None
True
>>> write_record(folder / ".report.json", {"key": "k"})
>>> read_record(folder / ".report.json")
{'key': 'k'}
>>> _ = (folder / ".report.json").write_text("{not json")
>>> read_record(folder / ".report.json") is None
True
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab._files import atomic_write_bytes, file_problem, file_record, sha256_of
from shiftlab._hashing import content_hash, file_hash
from shiftlab._version import __version__
from shiftlab.errors import DamagedFile
from shiftlab.store import MANIFEST, ORGANISM_TABLE, RUNS_TABLE, TABLE_REMEDY, Store

REPORT_RECORD = ".report.json"
STUDY_RECORD = ".study.json"  # in tables/
# Environment variables that can change where a study's data and models are read from.
ENV_PREFIXES = ("SHIFTLAB_", "HF_", "TRANSFORMERS_")
# What planning opens that is code or the machine, not data.
_SKIPPED_SUFFIXES = (".py", ".pyc", ".so", ".pth")
_SKIPPED_ROOTS = ("/proc", "/sys", "/dev")


@functools.cache
def code_version() -> str:
    """A hash of the package's source files and packaged specs: any change is new code."""
    root = Path(__file__).resolve().parent
    files = sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml") and p.is_file())
    return content_hash([(str(p.relative_to(root)), file_hash(p, 64)) for p in files])


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``; None when it is missing or not a whole JSON object."""
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(path: Path, record: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(record, indent=1, sort_keys=True).encode())


def _table_digest(store: Store, name: str) -> str | None:
    """A table's sha256, checked as reading it checks it (a damaged table is a
    :class:`~shiftlab.errors.DamagedFile` naming it); None when there is no table."""
    path = store.table_path(name)
    if not path.is_file():
        return None
    problem = store.table_problem(name)
    if problem is not None:
        raise DamagedFile(f"{path}: damaged: {problem}; {TABLE_REMEDY}", path)
    return sha256_of(path)


def manifest_summary(store: Store) -> dict[str, Any]:
    """What the report shows of the store's manifest."""
    manifest = read_record(store.root / MANIFEST) or {}
    return {
        "shiftlab (report)": __version__,
        "shiftlab (study)": manifest.get("shiftlab_version"),
        "git revision": (manifest.get("git") or {}).get("revision"),
        "study hash": manifest.get("study_hash"),
        "seeds": manifest.get("seeds"),
        "packages": manifest.get("packages"),
    }


def report_key(store: Store, parameters: dict[str, Any]) -> str:
    """A hash of everything a report is built from."""
    pools = []
    for pool_id in store.finished_ids("pools"):
        store.verified("pools", pool_id)  # read as building the report reads it
        pools.append((pool_id, file_hash(store.manifest_path("pools", pool_id), 64)))
    return content_hash(
        {
            "code": code_version(),
            "parameters": parameters,
            "title": store.root.name,
            "tables": {n: _table_digest(store, n) for n in (RUNS_TABLE, ORGANISM_TABLE)},
            "pools": pools,
            "manifest": manifest_summary(store),
        },
        64,
    )


def report_is_current(folder: Path, key: str) -> bool:
    """Whether ``folder`` holds a whole report built from inputs with this ``key``."""
    record = read_record(folder / REPORT_RECORD)
    if record is None or record.get("key") != key or not isinstance(record.get("files"), dict):
        return False
    return all(
        isinstance(said, dict) and file_problem(folder / name, said) is None
        for name, said in record["files"].items()
    )


def record_report(folder: Path, key: str, written: Iterable[Path]) -> None:
    """Record, last, that the report's files in ``folder`` were built from ``key``."""
    files = {str(p.relative_to(folder)): file_record(p) for p in sorted(set(written))}
    write_record(folder / REPORT_RECORD, {"key": key, "files": files})


def forget(path: Path) -> None:
    """Remove a record before what it describes is rebuilt."""
    path.unlink(missing_ok=True)


# The open read sets of `watching_inputs`; the audit hook adds to each.
_WATCHERS: list[tuple[set[str], set[str]]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _WATCHERS:
        return
    if event == "open":
        path, mode, flags = args
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            return
        if mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR):
            return
        kind = 0
    elif event in ("os.listdir", "os.scandir"):
        path, kind = args[0], 1
    else:
        return
    if isinstance(path, (str, os.PathLike)):
        for watched in _WATCHERS:
            watched[kind].add(os.path.abspath(os.fspath(path)))


@functools.cache
def _install_hook() -> None:
    sys.addaudithook(_audit)


@contextlib.contextmanager
def watching_inputs() -> Iterator[tuple[set[str], set[str]]]:
    """The files opened for reading and the folders listed in this process while inside."""
    _install_hook()
    seen: tuple[set[str], set[str]] = (set(), set())
    _WATCHERS.append(seen)
    try:
        yield seen
    finally:
        _WATCHERS.remove(seen)


def _stamp(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _listing(folder: Path) -> list[Any] | None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return None
    return [[e.name, _stamp(Path(e.path)) if e.is_file() else "dir"] for e in entries]


def _outside(path: str, store: Store) -> bool:
    """Whether ``path`` is data planning read, not code, the machine or the store itself."""
    if path.endswith(_SKIPPED_SUFFIXES) or path.startswith(_SKIPPED_ROOTS):
        return False
    inside = (str(store.root.resolve()), sys.prefix, sys.base_prefix)
    return not any(path == root or path.startswith(root + os.sep) for root in inside)


def input_stamps(store: Store, files: Iterable[str], folders: Iterable[str]) -> dict[str, Any]:
    """Sizes and modification times of ``files``, and listings of ``folders``, outside
    the store, the code and the machine."""
    folders = [f for f in folders if f not in sys.path]
    return {
        # A folder opened (to fsync it) or a temporary gone since is no input.
        "files": {
            f: _stamp(Path(f)) for f in sorted(files) if _outside(f, store) and os.path.isfile(f)
        },
        "folders": {
            f: _listing(Path(f)) for f in sorted(folders) if _outside(f, store) and os.path.isdir(f)
        },
    }


def study_key(spec_yaml: str) -> str:
    """A hash of what decides a study's plan besides the files planning reads."""
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)}
    return content_hash(
        {"spec": spec_yaml, "code": code_version(), "cwd": os.getcwd(), "env": env}, 64
    )


def record_study(
    store: Store, spec_yaml: str, artefacts: list[tuple[str, str]], inputs: dict[str, Any]
) -> None:
    """Record, after its tables, that every artefact of the study is finished."""
    record = {
        "key": study_key(spec_yaml),
        "artefacts": [list(a) for a in artefacts],
        "tables": {n: _table_digest(store, n) for n in (RUNS_TABLE, ORGANISM_TABLE)},
        "inputs": inputs,
    }
    write_record(store.root / "tables" / STUDY_RECORD, record)


def study_is_finished(store: Store, spec_yaml: str) -> bool:
    """Whether ``store`` holds this study finished, as its last run left it: same spec,
    code and inputs, every artefact finished and the tables that run wrote. The tables
    and pools are checked as a run reads them: a damaged one is a
    :class:`~shiftlab.errors.DamagedFile` naming it."""
    record = read_record(store.root / "tables" / STUDY_RECORD)
    study = store.root / "study.yaml"
    if record is None or record.get("key") != study_key(spec_yaml) or not study.is_file():
        return False
    if study.read_bytes() != spec_yaml.encode():
        return False
    try:
        inputs = record["inputs"]
        if any(_stamp(Path(f)) != said for f, said in inputs["files"].items()):
            return False
        if any(_listing(Path(f)) != said for f, said in inputs["folders"].items()):
            return False
        if not all(store.is_finished(kind, i) for kind, i in record["artefacts"]):
            return False
        tables = record["tables"]
        if any(_table_digest(store, n) != tables[n] for n in (RUNS_TABLE, ORGANISM_TABLE)):
            return False
        artefacts = [(str(kind), str(i)) for kind, i in record["artefacts"]]
    except (KeyError, TypeError, ValueError):
        return False
    for kind, artefact_id in artefacts:
        if kind == "pools":  # read as planning the runs reads them: damage is named
            store.verified(kind, artefact_id)
    return True


def summarise_deltas(design: pl.DataFrame) -> pl.DataFrame:
    """Mean behaviour and capability delta by behaviour x method x arm (the table a
    study prints; here so that a finished one prints it without loading the study);
    k-scaling rows below a method's full candidate count are left out."""
    full_k = pl.col("k").is_null() | (pl.col("k") == pl.col("k").max().over("method"))
    return (
        design.filter(full_k)
        .group_by("behaviour", "method", "arm")
        .agg(
            pl.col("delta").mean().alias("mean_delta"),
            pl.col("capability_delta").mean().alias("mean_capability_delta"),
            pl.len().alias("n"),
        )
        .sort("behaviour", "method", "arm")
    )
