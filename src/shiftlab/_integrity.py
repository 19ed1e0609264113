"""Damage in a store: every finished artefact's files against their records, the tables,
the study file and the caches; and clearing what is damaged so that a run rebuilds it.

``inspect_store(store, hashes=False)`` is cheap (every manifest is read and every file
stat-ed, caches are checked for being whole): commands that read a store run it first.
``hashes=True`` also compares every file's sha256 and checks every cache row (``shiftlab
status --verify``, ``repro``, ``run --rebuild``).

>>> import tempfile
>>> from shiftlab.store import Store
>>> store = Store.open(tempfile.mkdtemp())
>>> with store.artefact("organisms", "org", {}) as folder:
...     _ = (folder / "eval.txt").write_text("0.5")
>>> _ = (store.path("organisms", "org") / "eval.txt").write_text("0.9")
>>> inspect_store(store).damage
[]
>>> [d.artefact for d in inspect_store(store, hashes=True).damage]
[('organisms', 'org')]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shiftlab._files import remove_path
from shiftlab._sqlite_cache import CACHE_REMEDY, cache_problem
from shiftlab.errors import DamagedFile
from shiftlab.store import KINDS, STUDY_REMEDY, TABLE_REMEDY, Store


@dataclass(frozen=True)
class Damage:
    """One damaged file: the line that names it and what to do, and what a rebuild
    removes (the whole artefact it belongs to, else the file itself)."""

    line: str
    path: Path
    artefact: tuple[str, str] | None = None


@dataclass
class Inspection:
    """What :func:`inspect_store` found: the damage, and how many artefacts were written
    before manifests recorded hashes (their files are checked for size and for being
    whole, not for their content)."""

    damage: list[Damage] = field(default_factory=list)
    unrecorded: int = 0

    def refuse(self, store: Store) -> None:
        """Raise :class:`~shiftlab.errors.DamagedFile` naming the first damaged file."""
        if not self.damage:
            return
        more = len(self.damage) - 1
        tail = f" ({more} more: `shiftlab status {store.root}` lists them)" if more else ""
        raise DamagedFile(self.damage[0].line + tail)

    def note(self) -> str | None:
        """The note for artefacts whose manifests hold no hashes, if there are any."""
        if not self.unrecorded:
            return None
        return (
            f"note: {self.unrecorded} artefact(s) were written before manifests recorded "
            "hashes; their files are checked for size and for being whole, not for their content"
        )


def _artefact_damage(store: Store, kind: str, artefact_id: str, hashes: bool) -> Damage | None:
    try:
        if hashes:
            store.verified(kind, artefact_id)
        else:
            store.data_files(kind, artefact_id)
    except DamagedFile as error:
        return Damage(str(error), Path(str(error.path)), (kind, artefact_id))
    return None


def inspect_store(store: Store, *, hashes: bool = False) -> Inspection:
    """Every damaged file in ``store`` (see the module docstring for what is checked)."""
    found = Inspection()
    problem = store.study_problem()
    study = store.root / "study.yaml"
    if problem is not None:
        found.damage.append(Damage(f"{study}: damaged: {problem}; {STUDY_REMEDY}", study))
    for kind in KINDS:
        for artefact_id in store.finished_ids(kind):
            damage = _artefact_damage(store, kind, artefact_id, hashes)
            if damage is not None:
                found.damage.append(damage)
            elif None in store.file_records(kind, artefact_id).values():
                found.unrecorded += 1
    tables = store.root / "tables"
    for path in sorted(tables.glob("[!.]*.parquet")) if tables.is_dir() else []:
        problem = store.table_problem(path.stem)
        if problem is not None:
            found.damage.append(Damage(f"{path}: damaged: {problem}; {TABLE_REMEDY}", path))
    cache = store.root / "cache"
    for path in sorted(cache.glob("[!.]*.sqlite")) if cache.is_dir() else []:
        problem = cache_problem(path, rows=hashes)
        if problem is not None:
            found.damage.append(Damage(f"{path}: damaged: {problem}; {CACHE_REMEDY}", path))
    return found


def clear_damage(store: Store, damage: list[Damage]) -> list[str]:
    """Remove what is damaged so that the next run builds it again (an artefact whole,
    a table with its record, a cache file, the study file); returns what went."""
    removed = []
    for item in damage:
        if item.artefact is not None:
            store.remove(*item.artefact)
            removed.append("/".join(item.artefact))
            continue
        remove_path(item.path)
        if item.path.parent == store.root / "tables":
            remove_path(store.table_manifest_path(item.path.stem))
        removed.append(item.path.relative_to(store.root).as_posix())
    return removed
