"""A finished store with one damaged file of each kind: every command names the file in
one line (exit 2) or, when the file is not one it reads, does its work unharmed."""

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest

from shiftlab.cli import main
from spec_helpers import TINY_STUDY

# One file of each kind a store holds, and how to find it.
FILES = {
    "parquet": lambda root: next((root / "pools").glob("*.parquet")),
    "json": lambda root: next((root / "runs").glob("*/manifest.json")),
    "safetensors": lambda root: next(root.glob("organisms/*/adapter/adapter_model.safetensors")),
    "sqlite": lambda root: next((root / "cache").glob("embeddings@*.sqlite")),
    "yaml": lambda root: root / "study.yaml",
}


def _middle(data: bytes, fill) -> bytes:
    n = max(1, min(4096, len(data) // 4))
    start = len(data) // 2 - n // 2
    return data[:start] + fill(n) + data[start + n :]


DAMAGE = {
    "truncate": lambda data: data[: len(data) // 2 + 1],
    "zero": lambda data: _middle(data, lambda n: b"\0" * n),
    "random": lambda data: _middle(data, random.Random(0).randbytes),
}


def _seen_by_size(kind: str, damage: str) -> bool:
    """Damage that the cheap check every command makes finds: a size, a manifest or the
    study file (hashed against the store's manifest), a cache file cut short."""
    return damage == "truncate" or kind in ("json", "yaml")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("damage")
    spec = root / "spec.json"
    spec.write_text(json.dumps(TINY_STUDY))
    store = root / "store"
    assert main(["run", str(spec), "--store", str(store), "--no-progress", "--workers", "1"]) == 0
    return spec, store


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _assert_named_in_one_line(err: str, path: Path) -> None:
    assert err.startswith(f"shiftlab: error: {path}: damaged: "), err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("kind", sorted(FILES))
def test_every_command_names_a_damaged_file(finished, tmp_path, capsys, kind, damage):
    spec, original = finished
    store = tmp_path / "store"
    shutil.copytree(original, store)
    path = FILES[kind](store)
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    builds = (store / "builds.jsonl").read_text()
    # What each command reads: status and report the pools (to plan runs, to draw the
    # selection curve), run the pools too; repro and status --verify hash every file.
    read = _seen_by_size(kind, damage) or kind == "parquet"
    commands = {
        ("status", str(store)): read,
        ("status", str(store), "--verify"): True,
        ("run", str(spec), "--store", str(store), "--no-progress", "--workers", "1"): read,
        ("report", str(store), "--n-boot", "20"): read,
        ("repro", "check", str(store), "--sample", "1", "--no-progress"): True,
    }
    for command, refused in commands.items():
        code, out, err = _cli(capsys, *command)
        if refused:
            assert code == 2, (command, out, err)
            _assert_named_in_one_line(err, path)
        else:
            assert code == 0, (command, err)
        if command[-1] == "--verify":  # the listing names it too
            assert f"{path}: damaged: " in out
    # Nothing was built from the damaged file.
    assert (store / "builds.jsonl").read_text() == builds


def _content(path: Path) -> object:
    """A file's bytes; for a manifest, what it records of the artefact's files but the
    training log (the rest, and the log's throughput, say when and how fast it was built)."""
    if path.name == "manifest.json":
        files = json.loads(path.read_text())["files"]
        return {name: record for name, record in files.items() if name != "train_log.parquet"}
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", sorted(FILES))
def test_rebuild_replaces_the_damaged_file_with_what_it_was(finished, tmp_path, capsys, kind):
    spec, original = finished
    store = tmp_path / "store"
    shutil.copytree(original, store)
    path = FILES[kind](store)
    before = _content(path)
    path.write_bytes(DAMAGE["zero"](path.read_bytes()))
    code, out, err = _cli(capsys, "run", str(spec), "--store", str(store), "--no-progress",
                          "--workers", "1", "--rebuild")  # fmt: skip
    assert code == 0, err
    assert "damaged, deleted to be built again: " in out
    code, out, err = _cli(capsys, "status", str(store), "--verify")
    assert code == 0 and "damaged" not in out, out
    if kind != "sqlite":  # a deleted cache is filled again only by work that needs it
        assert _content(path) == before  # built again on the same CPU: the same bytes
    tables = sorted((store / "tables").glob("*.parquet"))
    assert [p.read_bytes() for p in tables] == [
        (original / "tables" / p.name).read_bytes() for p in tables
    ]


def test_a_run_from_a_damaged_organism_is_refused(finished, tmp_path, capsys):
    """The case that went wrong: part of an organism adapter zeroed and one of its runs
    deleted; the run must not be retrained from the damaged adapter."""
    spec, original = finished
    store = tmp_path / "store"
    shutil.copytree(original, store)
    adapter = FILES["safetensors"](store)
    data = bytearray(adapter.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 20_000] = bytes(20_000)
    adapter.write_bytes(bytes(data))
    shutil.rmtree(next((store / "runs").iterdir()))
    code, _, err = _cli(capsys, "run", str(spec), "--store", str(store), "--no-progress",
                        "--workers", "1")  # fmt: skip
    assert code == 2
    _assert_named_in_one_line(err, adapter)
    assert err.strip().endswith("to rebuild it, or run the study with --rebuild")
    assert len(list((store / "runs").iterdir())) == 1  # nothing was retrained
