"""Hashed manifests: what the store records of each file, and what it refuses to read."""

import hashlib
import json
import os
from pathlib import Path

import polars as pl
import pytest

from shiftlab import _files
from shiftlab.errors import DamagedFile, StoreError
from shiftlab.store import MANIFEST, Store


def _organism(store: Store, artefact_id: str = "org") -> Path:
    with store.artefact("organisms", artefact_id, {"seed": 0}) as folder:
        (folder / "adapter").mkdir()
        (folder / "adapter" / "weights.bin").write_bytes(b"w" * 4096)
        pl.DataFrame({"output": ["a", "b"]}).write_parquet(folder / "eval.parquet")
    return store.path("organisms", artefact_id)


def test_every_file_is_recorded_with_its_size_and_sha256(tmp_path):
    store = Store.open(tmp_path)
    folder = _organism(store)
    files = store.read_manifest("organisms", "org")["files"]
    assert sorted(files) == ["adapter/weights.bin", "eval.parquet"]
    weights = (folder / "adapter" / "weights.bin").read_bytes()
    assert files["adapter/weights.bin"] == {
        "bytes": 4096,
        "sha256": hashlib.sha256(weights).hexdigest(),
    }
    with store.artefact("pools", "org__m", {}) as target:
        pl.DataFrame({"x": [1]}).write_parquet(target)
    (name,) = store.read_manifest("pools", "org__m")["files"]
    assert name == "org__m.parquet"
    assert store.read_parquet("pools", "org__m")["x"].to_list() == [1]


def test_a_zeroed_range_is_caught_by_the_hash_of_a_loaded_file_only(tmp_path):
    store = Store.open(tmp_path)
    folder = _organism(store)
    with open(folder / "adapter" / "weights.bin", "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\0" * 100)  # same size, other bytes
    store.data_files("organisms", "org")  # sizes only: looks whole
    store.read_parquet("organisms", "org", "eval.parquet")  # hashes eval.parquet only
    with pytest.raises(DamagedFile) as caught:
        store.verified("organisms", "org", "adapter")
    message = str(caught.value)
    assert message.startswith(f"{folder / 'adapter' / 'weights.bin'}: damaged: its content is not")
    assert f"delete {folder} to rebuild it, or run the study with --rebuild" in message
    assert "\n" not in message


def test_a_truncated_file_is_caught_by_its_size_on_every_read(tmp_path):
    store = Store.open(tmp_path)
    folder = _organism(store)
    os.truncate(folder / "adapter" / "weights.bin", 100)
    with pytest.raises(DamagedFile, match="100 bytes where its manifest records 4096"):
        store.read_parquet("organisms", "org", "eval.parquet")


def test_a_file_is_hashed_once_per_version(tmp_path, monkeypatch):
    store = Store.open(tmp_path)
    folder = _organism(store)
    hashed = []
    real = _files.hashlib.sha256

    def counting(*args):
        hashed.append(1)
        return real(*args)

    monkeypatch.setattr(_files.hashlib, "sha256", counting)
    for _ in range(3):
        store.verified("organisms", "org")
    assert hashed == []  # hashed as it was written; the rename kept its version
    os.utime(folder / "eval.parquet", ns=(1, 1))  # the same bytes, another version
    for _ in range(3):
        store.verified("organisms", "org")
    assert len(hashed) == 1


def test_a_damaged_manifest_is_named_with_what_to_do(tmp_path):
    store = Store.open(tmp_path)
    folder = _organism(store)
    manifest = folder / MANIFEST
    manifest.write_bytes(manifest.read_bytes()[:40])
    with pytest.raises(DamagedFile) as caught:
        store.read_manifest("organisms", "org")
    assert str(caught.value).startswith(f"{manifest}: damaged: not a readable manifest (")
    assert "to rebuild it" in str(caught.value)
    manifest.write_text(json.dumps({"files": {"eval.parquet": "oops"}}))
    with pytest.raises(DamagedFile, match="not a manifest shiftlab writes"):
        store.data_files("organisms", "org")


def test_stores_from_before_hashes_still_read_and_are_checked_for_being_whole(tmp_path):
    store = Store.open(tmp_path)
    folder = _organism(store)
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "files": sorted(manifest["files"])}))
    assert store.file_records("organisms", "org") == dict.fromkeys(manifest["files"])
    assert store.read_parquet("organisms", "org", "eval.parquet").height == 2
    os.truncate(folder / "eval.parquet", 30)
    with pytest.raises(DamagedFile, match="not a whole parquet file"):
        store.read_parquet("organisms", "org", "eval.parquet")


def test_tables_carry_a_record_and_a_damaged_one_says_to_rerun(tmp_path):
    store = Store.open(tmp_path)
    path = store.write_table("runs", pl.DataFrame({"delta": [0.1, None]}))
    record = json.loads(store.table_manifest_path("runs").read_text())["files"]["runs.parquet"]
    assert record["bytes"] == path.stat().st_size
    assert store.read_table("runs")["delta"].to_list() == [0.1, None]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedFile) as caught:
        store.read_table("runs")
    assert str(caught.value) == (
        f"{path}: damaged: its content is not what was written (sha256 "
        f"{hashlib.sha256(bytes(data)).hexdigest()[:12]} where its manifest records "
        f"{record['sha256'][:12]}); rerun the study to write it again from the artefacts"
    )


def test_a_damaged_study_file_is_told_from_another_study(tmp_path):
    store = Store.open(tmp_path)
    store.write_study("name: a\n", {"study": 0})
    (tmp_path / "study.yaml").write_bytes(b"name: \xff\n")
    with pytest.raises(DamagedFile, match=r"study.yaml: damaged: not UTF-8 text"):
        store.write_study("name: a\n", {"study": 0})
    (tmp_path / "study.yaml").unlink()
    with pytest.raises(StoreError, match="holds a different study"):
        store.write_study("name: b\n", {"study": 0})
    store.write_study("name: a\n", {"study": 0})  # the same study writes it again
    assert store.study_problem() is None


def test_remove_takes_the_manifest_first(tmp_path):
    store = Store.open(tmp_path)
    _organism(store)
    with store.artefact("pools", "org__m", {}) as target:
        target.write_bytes(b"x")
    store.remove("organisms", "org")
    store.remove("pools", "org__m")
    assert store.finished_ids("organisms") == [] and store.finished_ids("pools") == []
    assert not store.path("pools", "org__m").exists()
    assert not store.path("organisms", "org").exists()
