import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from shiftlab.errors import DamagedFile, OutOfSpace, StoreError
from shiftlab.store import (
    MANIFEST,
    STORE_FORMAT,
    Store,
    atomic_write_bytes,
    build_manifest,
    temporary_sibling,
    validate_id,
)


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "a\\b", "x" * 201, "a..b", "a b"])
def test_invalid_ids_are_refused(bad):
    with pytest.raises(StoreError, match="invalid artefact id"):
        validate_id(bad)


def test_store_paths_refuse_traversal(tmp_path: Path):
    store = Store.open(tmp_path)
    with pytest.raises(StoreError):
        store.path("organisms", "../../etc")
    with pytest.raises(StoreError, match="unknown artefact kind"):
        store.path("../organisms", "x")


def test_artefact_commits_manifest_last(tmp_path: Path):
    store = Store.open(tmp_path)
    assert not store.is_finished("organisms", "a1")
    with store.artefact("organisms", "a1", {"x": 1}) as folder:
        (folder / "data.txt").write_text("hi")
        assert not store.is_finished("organisms", "a1")
    assert store.is_finished("organisms", "a1")
    assert (store.path("organisms", "a1") / "data.txt").read_text() == "hi"
    sha = hashlib.sha256(b"hi").hexdigest()
    assert store.read_manifest("organisms", "a1") == {
        "x": 1,
        "files": {"data.txt": {"bytes": 2, "sha256": sha}},
    }
    assert store.finished_ids("organisms") == ["a1"]
    with pytest.raises(StoreError, match="already finished"), store.artefact("organisms", "a1", {}):
        pass


def test_failed_write_leaves_nothing(tmp_path: Path):
    store = Store.open(tmp_path)
    with pytest.raises(RuntimeError), store.artefact("organisms", "a1", {}) as folder:
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")
    assert not store.is_finished("organisms", "a1")
    assert [
        p.name for p in (tmp_path / "organisms").iterdir() if not p.name.endswith(".lock")
    ] == []


def test_write_killed_half_way_leaves_no_finished_artefact(tmp_path: Path):
    script = textwrap.dedent(
        f"""
        import os, signal
        from shiftlab.store import Store
        store = Store.open({str(tmp_path)!r})
        with store.artefact("organisms", "victim", {{"a": 1}}) as folder:
            (folder / "adapter.bin").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == -9
    store = Store.open(tmp_path)
    assert not store.is_finished("organisms", "victim")
    assert not store.path("organisms", "victim").exists()
    leftovers = list((tmp_path / "organisms").glob(".tmp-victim-*"))
    assert leftovers, "the killed writer's temporary folder should still be there"
    with store.artefact("organisms", "victim", {"a": 2}) as folder:
        (folder / "adapter.bin").write_bytes(b"whole")
    assert not list((tmp_path / "organisms").glob(".tmp-victim-*"))
    assert list(store.read_manifest("organisms", "victim")["files"]) == ["adapter.bin"]


def test_atomic_file_write_keeps_old_content_on_failure(tmp_path: Path):
    target = tmp_path / "t.txt"
    atomic_write_bytes(target, b"old")

    def failing(path: Path) -> None:
        path.write_bytes(b"partial")
        raise OSError("disk full")

    from shiftlab.store import atomic_write

    with pytest.raises(OSError):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_tables_round_trip(tmp_path: Path):
    store = Store.open(tmp_path)
    frame = pl.DataFrame({"a": [1, 2]})
    store.write_table("runs", frame)
    assert store.read_table("runs").equals(frame)
    with pytest.raises(StoreError, match="no such table"):
        store.read_table("missing")


def test_unwritable_store(tmp_path: Path):
    if os.geteuid() == 0:
        target = Path("/proc/shiftlab-store")  # not writable even for root
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "store"
    with pytest.raises(StoreError, match="not writable"):
        Store.open(target)
    file_path = tmp_path / "file"
    file_path.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        Store.open(file_path)


def test_newer_store_format_is_refused(tmp_path: Path):
    (tmp_path / MANIFEST).write_text(json.dumps({"store_format": STORE_FORMAT + 1}))
    with pytest.raises(StoreError, match="newer than this shiftlab"):
        Store.open(tmp_path)


def test_a_store_from_before_capability_scoring_is_refused(tmp_path: Path):
    (tmp_path / MANIFEST).write_text(json.dumps({"store_format": 1}))
    with pytest.raises(StoreError, match=r"predates this shiftlab's .*capability.* new store"):
        Store.open(tmp_path)


def test_manifest_records_environment():
    manifest = build_manifest({"lr": 0.1}, {"seed": 3})
    assert manifest["seeds"] == {"seed": 3}
    assert len(manifest["config_hash"]) == 16
    assert manifest["packages"]["torch"]
    assert "revision" in manifest["git"]
    assert manifest["hardware"]["cpu_count"] >= 1
    import hashlib

    import torch

    cpu = manifest["hardware"]["cpu_class"]
    assert cpu["isa"] == torch.backends.cpu.get_cpu_capability() and cpu["vendor"]
    lock = Path(__file__).resolve().parents[1] / "requirements.lock"
    assert manifest["lock"]["sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
    assert isinstance(manifest["lock"]["deviations"], list)


def test_two_processes_share_one_artefact_lock(tmp_path: Path):
    """The second writer waits for the first, then sees the artefact finished."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from shiftlab.store import Store
        store = Store.open({str(tmp_path)!r})
        with store.lock("organisms", "shared"):
            if store.is_finished("organisms", "shared"):
                print("skipped")
                sys.exit(0)
            time.sleep(1.0)
            with store.artefact("organisms", "shared", {{}}) as folder:
                (folder / "x").write_text(sys.argv[1])
            print("built")
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(i)], stdout=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outputs = sorted(p.communicate()[0].strip() for p in procs)
    assert outputs == ["built", "skipped"]


def test_cleanup_spares_other_artefacts_temporaries(tmp_path: Path):
    store = Store.open(tmp_path)
    other = tmp_path / "organisms" / ".tmp-a-b-1234abcd"  # belongs to artefact "a-b"
    other.mkdir(parents=True)
    stale = tmp_path / "organisms" / ".tmp-a-deadbeef"
    stale.mkdir()
    with store.artefact("organisms", "a", {}):
        pass
    assert other.is_dir() and not stale.exists()


def test_publish_dir_keeps_the_first_finished_copy(tmp_path: Path):
    from shiftlab.store import publish_dir

    final = tmp_path / "model"
    first, second = tmp_path / "one", tmp_path / "two"
    for folder, text in ((first, "1"), (second, "2")):
        folder.mkdir()
        (folder / "w").write_text(text)
    publish_dir(first, final)
    publish_dir(second, final)
    assert (final / "w").read_text() == "1" and not second.exists()


def test_a_killed_file_artefact_leaves_temporaries_that_the_next_build_sweeps(tmp_path):
    store = Store.open(tmp_path)
    final = store.path("pools", "org__m")
    final.parent.mkdir(parents=True)
    leftovers = [temporary_sibling(final), temporary_sibling(final)]
    leftovers[0].write_bytes(b"half a parquet file")
    leftovers[1].mkdir()  # a parts folder
    with store.artefact("pools", "org__m", {"ok": True}) as target:
        target.write_bytes(b"pool")
    assert final.read_bytes() == b"pool"
    assert store.finished_ids("pools") == ["org__m"]
    assert not any(p.exists() for p in leftovers)
    with (
        pytest.raises(StoreError, match="nothing was written"),
        store.artefact("pools", "org__n", {}),
    ):
        pass
    assert not store.is_finished("pools", "org__n")


def test_a_listed_file_that_went_missing_is_named(tmp_path: Path):
    store = Store.open(tmp_path)
    with store.artefact("runs", "r1", {"x": 1}) as folder:
        (folder / "adapter").mkdir()
        (folder / "adapter" / "weights.bin").write_bytes(b"w")
        (folder / "log.parquet").write_bytes(b"l")
    assert [p.name for p in store.data_files("runs", "r1")] == ["weights.bin", "log.parquet"]
    (store.path("runs", "r1") / "adapter" / "weights.bin").unlink()
    with pytest.raises(
        DamagedFile, match=r"r1/adapter/weights.bin: damaged: missing; delete .*/runs/r1 to rebuild"
    ):
        store.data_files("runs", "r1")


def test_a_folder_that_is_not_a_store_is_refused(tmp_path: Path):
    with pytest.raises(StoreError, match="root of a file system"):
        Store.open("/")
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(StoreError, match=r"not a shiftlab store .*'thesis\.tex'"):
        Store.open(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]  # nothing written
    Store.open(tmp_path / "new")  # a new folder, an empty one and a store are fine
    (tmp_path / "new" / "study.yaml").write_text("{}")
    Store.open(tmp_path / "new")


def test_the_cli_refuses_the_file_system_root_as_a_store(tmp_path: Path):
    from spec_helpers import TINY_STUDY

    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({**TINY_STUDY, "store": "/"}))
    exe = str(Path(sys.executable).with_name("shiftlab"))
    result = subprocess.run([exe, "run", str(spec)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "shiftlab: error: store / is the root of a file system; use a new folder inside it"
    )


# -- a full disk, and what killed writers leave --------------------------------------------


def _full_disk(*_: object, **__: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _one_line_naming(error: BaseException, path: Path) -> None:
    message = str(error)
    assert message.startswith(f"{path}: no space left on the device (") and "\n" not in message
    assert re.search(r"\(\d+(\.\d)? (B|KiB|MiB|GiB) free on /", message), message


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        # How safetensors and polars (Rust's io::Error) report it, with no errno.
        RuntimeError("Error while serializing: IoError(No space left on device (os error 28))"),
    ],
)
def test_a_full_disk_while_building_leaves_no_artefact(tmp_path: Path, failure):
    store = Store.open(tmp_path)
    with pytest.raises(OutOfSpace) as caught, store.artefact("runs", "r1", {"seed": 0}) as folder:
        (folder / "adapter.safetensors").write_bytes(b"half")
        raise failure
    _one_line_naming(caught.value, store.path("runs", "r1"))
    assert not store.is_finished("runs", "r1")
    assert list((tmp_path / "runs").iterdir()) == []  # no temporary, no lease


def test_a_full_disk_while_writing_a_table_keeps_the_old_one(tmp_path: Path, monkeypatch):
    store = Store.open(tmp_path)
    store.write_table("runs", pl.DataFrame({"a": [1]}))
    before = sorted(p.name for p in (tmp_path / "tables").iterdir())
    monkeypatch.setattr(pl.DataFrame, "write_parquet", _full_disk)
    with pytest.raises(OutOfSpace) as caught:
        store.write_table("runs", pl.DataFrame({"a": [2]}))
    _one_line_naming(caught.value, store.table_path("runs"))
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == before
    assert store.read_table("runs")["a"].to_list() == [1]


def test_writing_a_table_sweeps_what_killed_writers_left(tmp_path: Path):
    store = Store.open(tmp_path)
    tables = tmp_path / "tables"
    tables.mkdir()
    left = [temporary_sibling(store.table_path("runs")),
            temporary_sibling(store.table_manifest_path("organisms"))]  # fmt: skip
    for path in left:
        path.write_bytes(b"half a parquet file")
    (tables / ".tmp-notes").write_text("not a temporary shiftlab made")
    store.write_table("runs", pl.DataFrame({"a": [1]}))
    assert not any(path.exists() for path in left)
    assert sorted(p.name for p in tables.iterdir()) == [
        ".tmp-notes", "runs.manifest.json", "runs.parquet"]  # fmt: skip
