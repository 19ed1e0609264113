"""Fingerprints of a finished store: a hash per table row and per file, each manifest's
config, and every run's losses, metrics and shift statistics."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab._environment import environment_info
from shiftlab._hashing import canonical_json, content_hash, file_hash
from shiftlab._integrity import inspect_store
from shiftlab._version import __version__
from shiftlab.errors import StoreError
from shiftlab.repro._types import FINGERPRINT_FORMAT, FINGERPRINTS, RECORDED_KINDS, SHIFT_STATISTICS
from shiftlab.store import MANIFEST, Store, atomic_write_bytes


def frame_fingerprint(frame: pl.DataFrame) -> dict[str, Any]:
    """A frame's content hash (schema and values) and a short hash per row.

    >>> a = frame_fingerprint(pl.DataFrame({"x": [1, 2]}))
    >>> a == frame_fingerprint(pl.DataFrame({"x": [1, 2]})), len(a["rows"])
    (True, 2)
    """
    rows = [hashlib.sha256(canonical_json(row).encode()).hexdigest()[:12] for row in frame.rows()]
    schema = {name: str(dtype) for name, dtype in frame.schema.items()}
    return {"sha256": content_hash({"schema": schema, "rows": rows}, 32), "rows": rows}


def file_fingerprint(path: Path) -> dict[str, Any]:
    if path.suffix == ".parquet":
        return frame_fingerprint(pl.read_parquet(path))
    return {"sha256": file_hash(path, 32)}


def _artefacts(store: Store) -> Iterator[tuple[str, str, list[Path]]]:
    """(kind, id, data files) of every finished artefact; raises if a file is missing."""
    for kind in RECORDED_KINDS:
        for artefact_id in store.finished_ids(kind):
            yield kind, artefact_id, store.data_files(kind, artefact_id)


def _relative(store: Store, path: Path) -> str:
    return path.relative_to(store.root).as_posix()


def _run_record(store: Store, run_id: str, shifts: list[str]) -> dict[str, Any]:
    folder = store.path("runs", run_id)
    manifest = store.read_manifest("runs", run_id)
    record: dict[str, Any] = {
        "losses": pl.read_parquet(folder / "train_log.parquet")["loss"].to_list(),
        "metrics": manifest.get("metrics", {}),
        "capability": manifest.get("capability"),
        "cuda": (manifest.get("hardware") or {}).get("cuda"),
        "cpu_class": (manifest.get("hardware") or {}).get("cpu_class"),
        "shift": {},
    }
    for shift_id in shifts:
        row = pl.read_parquet(store.path("shift", shift_id)).row(0, named=True)
        record["shift"][shift_id] = {k: row.get(k) for k in SHIFT_STATISTICS}
    return record


def _shift_ids_by_run(store: Store) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for shift_id in store.finished_ids("shift"):
        run_id = store.read_manifest("shift", shift_id)["config"]["run"]
        found.setdefault(run_id, []).append(shift_id)
    return found


def fingerprint_store(store: Store) -> dict[str, Any]:
    """The fingerprints of every finished artefact and table of ``store`` (what
    :func:`record_fingerprints` writes). Raises :class:`StoreError` when an artefact's
    manifest lists a file that is missing."""
    files: dict[str, dict[str, Any]] = {}
    configs: dict[str, Any] = {}
    for kind, artefact_id, paths in _artefacts(store):
        configs[f"{kind}/{artefact_id}"] = store.read_manifest(kind, artefact_id).get("config")
        for path in paths:
            files[_relative(store, path)] = file_fingerprint(path)
    for path in sorted((store.root / "tables").glob("*.parquet")):
        files[_relative(store, path)] = file_fingerprint(path)
    if not files:
        raise StoreError(f"{store.root}: nothing to record: no finished artefacts or tables")
    shifts = _shift_ids_by_run(store)
    return {
        "format": FINGERPRINT_FORMAT,
        "shiftlab_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": environment_info()["git"],
        "study_hash": content_hash(study_text(store)),
        "files": files,
        "configs": configs,
        "runs": {r: _run_record(store, r, shifts.get(r, [])) for r in store.finished_ids("runs")},
    }


def record_fingerprints(store: Store, *, force: bool = False) -> Path:
    """Fingerprint every finished artefact and table of ``store`` into
    ``repro/fingerprints.json``; return its path. An existing record is replaced only with
    ``force`` (it is the reference later checks compare with)."""
    check_store_version(store)
    path = store.root / FINGERPRINTS
    if path.exists() and not force:
        raise StoreError(
            f"{path} exists: it is the reference `repro check` compares with; "
            "pass --force to replace it"
        )
    inspect_store(store, hashes=True).refuse(store)  # the record reads every file
    record = fingerprint_store(store)
    path.parent.mkdir(exist_ok=True)
    atomic_write_bytes(path, json.dumps(record, indent=1, sort_keys=True).encode())
    return path


def study_text(store: Store) -> str:
    study = store.root / "study.yaml"
    return study.read_text() if study.is_file() else ""


def read_fingerprints(store: Store) -> dict[str, Any]:
    """The record :func:`record_fingerprints` wrote, checked to be one this shiftlab reads."""
    path = store.root / FINGERPRINTS
    if not path.is_file():
        raise StoreError(
            f"{path}: no fingerprints recorded; run `shiftlab repro record {store.root}` first"
        )
    try:
        record: dict[str, Any] = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise StoreError(f"{path}: unreadable fingerprints ({error})") from None
    found = record.get("format") if isinstance(record, dict) else None
    if not isinstance(found, int) or found > FINGERPRINT_FORMAT:
        raise StoreError(
            f"{path}: fingerprint format {found!r} is not one this shiftlab reads "
            f"(up to {FINGERPRINT_FORMAT}); upgrade shiftlab"
        )
    missing = [k for k in ("study_hash", "files", "configs", "runs") if k not in record]
    if missing:
        raise StoreError(f"{path}: not a complete record (no {', '.join(missing)}); record again")
    return record


def check_store_version(store: Store) -> None:
    from packaging.version import InvalidVersion, Version

    manifest = store.root / MANIFEST
    if not manifest.is_file():
        raise StoreError(f"{store.root}: not a shiftlab store (no {MANIFEST})")
    built_by = json.loads(manifest.read_text()).get("shiftlab_version") or "0"
    try:
        newer = Version(built_by) > Version(__version__)
    except InvalidVersion:
        raise StoreError(f"{manifest}: shiftlab_version {built_by!r} is not a version") from None
    if newer:
        raise StoreError(
            f"{manifest}: the store was built by shiftlab {built_by}, newer than the installed "
            f"{__version__}; an older shiftlab cannot be expected to reproduce it: upgrade"
        )
