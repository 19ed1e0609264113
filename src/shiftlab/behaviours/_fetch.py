"""Fetching public behaviour datasets (downloaded, or copied from a local copy), checked
against shipped checksums.

The registry (``datasets.json`` beside this module) lists each dataset's files with their
SHA-256 and size, where they live upstream and their licence. A file is written only
once its checksum matches (downloaded to a temporary sibling, then renamed), so an
interrupted or corrupted fetch leaves no half-written file and a rerun resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from shiftlab.errors import ShiftlabError


@cache
def dataset_registry() -> dict[str, Any]:
    """Every fetchable dataset: ``{name: {description, base_url, licence, files}}``."""
    loaded: dict[str, Any] = json.loads(
        (Path(__file__).with_name("datasets.json")).read_text(encoding="utf-8")
    )
    return loaded


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, target: Path, sha256: str, timeout: float) -> None:
    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != sha256:
            raise ShiftlabError(
                f"{url}: checksum mismatch (expected sha256 {sha256[:12]}..., got "
                f"{digest.hexdigest()[:12]}...); the upstream file changed or the download "
                "was corrupted"
            )
        tmp.replace(target)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise ShiftlabError(f"{url}: download failed: {error}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _copy(source: Path, target: Path, sha256: str) -> None:
    """Copy a local file into place once its checksum matches, like :func:`_download`."""
    if not source.is_file():
        raise ShiftlabError(f"{source}: no such file in the local copy")
    if _sha256(source) != sha256:
        raise ShiftlabError(
            f"{source}: checksum mismatch (expected sha256 {sha256[:12]}...); the local copy "
            "is not the registry's version"
        )
    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    try:
        shutil.copyfile(source, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def fetch_dataset(
    name: str,
    to: str | Path | None = None,
    *,
    base_url: str | None = None,
    source: str | Path | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download dataset ``name`` into ``to/<name>`` (default: under :func:`data_home`).

    Files already present with the right checksum are kept; every downloaded file is
    checked against the registry's SHA-256 before it appears. ``base_url`` replaces the
    registry's upstream (a mirror). ``source`` copies, offline, from a local copy laid out
    as the fetched folder is (``source/<name>/...`` or ``source/...``), checksums checked
    the same way. Writes ``SOURCE.md`` with the origin and licence. Returns the
    dataset's folder.

    >>> sorted(dataset_registry())
    ['consistency-misalignment']
    """
    from shiftlab.behaviours._formats import data_home

    registry = dataset_registry()
    if name not in registry:
        raise ShiftlabError(f"unknown dataset {name!r}; known: {', '.join(sorted(registry))}")
    entry = registry[name]
    folder = Path(to).expanduser() if to is not None else data_home()
    folder = folder / name
    base = (base_url or entry["base_url"]).rstrip("/")
    local = None
    if source is not None:
        local = Path(source).expanduser()
        local = local / name if (local / name).is_dir() else local
        if not local.is_dir():
            raise ShiftlabError(f"{source}: no such folder to fetch {name} from")
        base = str(local.resolve())
    todo = [f for f in entry["files"] if not _present(folder / f["path"], f)]
    bar = tqdm(
        total=sum(f["bytes"] for f in todo), unit="B", unit_scale=True, desc=name,
        disable=not progress or not todo,
    )  # fmt: skip
    for item in todo:
        target = folder / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if local is not None:
            _copy(local / item["path"], target, item["sha256"])
        else:
            _download(f"{base}/{item['remote']}", target, item["sha256"], timeout)
        bar.update(item["bytes"])
    bar.close()
    (folder / "SOURCE.md").write_text(
        f"# {name}\n\n{entry['description']}\n\nFetched by `shiftlab data fetch {name}` from "
        f"{base}.\n\nLicence: {entry['licence']}. {entry['licence_note']}\n",
        encoding="utf-8",
    )
    return folder


def _present(path: Path, item: dict[str, Any]) -> bool:
    return (
        path.is_file() and path.stat().st_size == item["bytes"] and _sha256(path) == item["sha256"]
    )
