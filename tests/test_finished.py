"""Records of finished work: what a finished study and a finished report were built from."""

import os

import polars as pl
import pytest

from shiftlab._finished import (
    input_stamps,
    record_study,
    study_is_finished,
    watching_inputs,
)
from shiftlab.errors import DamagedFile
from shiftlab.store import Store

SPEC = "name: tiny\n"


@pytest.fixture()
def finished(tmp_path):
    """A store with one finished artefact and a table, recorded with one data file read."""
    store = Store.open(tmp_path / "store")
    (tmp_path / "store" / "study.yaml").write_text(SPEC)
    data = tmp_path / "data" / "eval.jsonl"
    data.parent.mkdir()
    data.write_text('{"prompt": "hi"}\n')
    with store.artefact("pools", "pool", {}) as path:
        pl.DataFrame({"score": [0.5]}).write_parquet(path)
    store.write_table("organisms", pl.DataFrame({"seed": [0]}))
    with watching_inputs() as (read, listed):
        data.read_text()
        os.listdir(data.parent)
        (tmp_path / "written.txt").write_text("an output, not an input")
    assert str(data) in read and str(tmp_path / "written.txt") not in read
    record_study(store, SPEC, [("pools", "pool")], input_stamps(store, read, listed))
    assert study_is_finished(store, SPEC)
    return store, data


def test_another_spec_is_not_finished(finished):
    store, _ = finished
    assert not study_is_finished(store, "name: other\n")


def test_a_changed_or_added_input_is_work(finished):
    store, data = finished
    data.write_text('{"prompt": "hello"}\n')
    assert not study_is_finished(store, SPEC)
    data.write_text('{"prompt": "hi"}\n')
    os.utime(data, ns=(0, 0))
    assert not study_is_finished(store, SPEC)


def test_a_new_file_in_a_listed_folder_is_work(finished):
    store, data = finished
    (data.parent / "more.jsonl").write_text("{}\n")
    assert not study_is_finished(store, SPEC)


def test_a_table_written_again_with_other_rows_is_work(finished):
    store, _ = finished
    store.write_table("organisms", pl.DataFrame({"seed": [1]}))
    assert not study_is_finished(store, SPEC)


def test_a_damaged_record_or_a_lost_artefact_is_work_and_a_damaged_pool_is_named(finished):
    store, _ = finished
    pool = store.path("pools", "pool")
    data = pool.read_bytes()
    pool.write_bytes(data[:-8] + b"\0" * 8)  # same size: only its sha256 tells
    with pytest.raises(DamagedFile, match=r"pool\.parquet: damaged"):
        study_is_finished(store, SPEC)
    pool.write_bytes(data)
    record = store.root / "tables" / ".study.json"
    record.write_text(record.read_text()[:30])
    assert not study_is_finished(store, SPEC)
    store.remove("pools", "pool")
    assert not study_is_finished(store, SPEC)
