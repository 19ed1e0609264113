"""Experiment tracking: runs, curves, design keys and attribution tables in MLflow (a local
file store, and a local server when one starts), wandb (offline) and trackio (local)."""

import importlib.util
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from shiftlab.errors import SpecError
from shiftlab.spec import TrackingSpec, parse_spec
from shiftlab.tracking import track_study
from spec_helpers import TINY_STUDY
from store_helpers import PATTERNS, RUNS, train_log, write_small_store

TABLES = {"decomposition": pl.DataFrame({"term": ["selection", "label_shift"],
                                         "estimate": [0.1, -0.2]})}  # fmt: skip


@pytest.fixture()
def store(tmp_path):
    return write_small_store(tmp_path / "store")


def _mlflow_runs(uri: str, experiment: str):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    (found,) = [e for e in client.search_experiments() if e.name == experiment]
    return client, {r.info.run_name: r for r in client.search_runs([found.experiment_id])}


@pytest.fixture()
def file_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install '.[mlflow]')")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    return str(tmp_path / "mlruns")


def test_mlflow_logs_every_run_with_its_curve_tags_and_the_tables(store, file_store):
    spec = TrackingSpec(kind="mlflow", uri=file_store, project="tiny")
    assert track_study(store, spec, study="tiny", tables=lambda: TABLES) == len(RUNS)
    client, runs = _mlflow_runs(file_store, "tiny")
    assert sorted(runs) == sorted([*RUNS, "tiny-attribution"])
    design = store.read_table("runs")
    for run_id, (method, arm, k, seed) in RUNS.items():
        run = runs[run_id]
        tags = run.data.tags
        assert (tags["method"], tags["arm"], tags["k"], tags["seed"]) == (method, arm, str(k),
                                                                          str(seed))  # fmt: skip
        assert tags["behaviour"] == "sycophancy" and tags["organism_id"] in run_id
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == list(
            train_log().select("step", "loss").iter_rows()
        )
        row = design.filter(run_id=run_id).row(0, named=True)
        assert run.data.metrics["eval/delta"] == row["delta"]
        assert run.data.metrics["eval/behaviour_after"] == row["behaviour_after"]
    assert row["behaviour_after"] == 1 / 8 and PATTERNS[run_id] == "amaaaaaa"
    tables = runs["tiny-attribution"]
    (artefact,) = client.list_artifacts(tables.info.run_id, "attribution")
    assert artefact.path == "attribution/decomposition.csv"
    local = client.download_artifacts(tables.info.run_id, artefact.path)
    assert pl.read_csv(local).equals(TABLES["decomposition"])
    # A resumed study logs nothing twice.
    assert track_study(store, spec, study="tiny", tables=lambda: TABLES) == 0
    assert len(_mlflow_runs(file_store, "tiny")[1]) == len(RUNS) + 1


def test_a_tracking_failure_is_one_warning_line_never_an_error(store, file_store, capsys):
    def broken():
        raise RuntimeError("the attribution tables could not be computed\nsecond line")

    spec = TrackingSpec(kind="mlflow", uri=file_store)
    assert track_study(store, spec, study="s", tables=broken) == len(RUNS)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("shiftlab: warning: tracking (mlflow) failed, the study is unaffected: "
                       "the attribution tables could not be computed second line")  # fmt: skip
    assert not any("Traceback" in line for line in err)
    # A tracking URI nothing can write to: the same one line.
    (Path(file_store).parent / "a-file").write_text("")
    bad = TrackingSpec(kind="mlflow", uri=str(Path(file_store).parent / "a-file" / "mlruns"))
    assert track_study(store, bad, study="s") == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len([x for x in lines if x.startswith("shiftlab: warning: tracking (mlflow)")]) == 1


def test_the_study_tracks_itself_and_keeps_tracking_out_of_its_identity(store, file_store):
    from shiftlab.study._run import _track

    spec = parse_spec({**TINY_STUDY, "tracking": {"kind": "mlflow", "uri": file_store}})
    assert "tracking" not in spec.to_yaml() and spec.to_yaml() == parse_spec(TINY_STUDY).to_yaml()
    _track(spec, store)  # what run_study does once the design table is written
    _, runs = _mlflow_runs(file_store, "study")
    assert sorted(runs) == sorted([*RUNS, "study-attribution"])


def test_a_bad_tracking_kind_names_the_field():
    with pytest.raises(SpecError, match=r"tracking\.kind"):
        parse_spec({**TINY_STUDY, "tracking": {"kind": "neptune"}}, "spec.yaml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_against_a_local_server(store, tmp_path):
    """Optional: a `mlflow server` on 127.0.0.1 (SQLite backend), when the installed
    MLflow has one and it answers within 30 s; mlflow-skinny, the dev extra, has none."""
    pytest.importorskip("mlflow", reason="mlflow is not installed")
    if importlib.util.find_spec("flask") is None or importlib.util.find_spec("sqlalchemy") is None:
        pytest.skip("no `mlflow server`: mlflow-skinny has no tracking server (full mlflow does)")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.skip("`mlflow server` did not answer within 30 s")
        uri = f"http://127.0.0.1:{port}"
        assert track_study(store, TrackingSpec(kind="mlflow", uri=uri), study="srv") == len(RUNS)
        assert sorted(_mlflow_runs(uri, "srv")[1]) == sorted(RUNS)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started
        server.wait(30)


def _wandb_records(path: Path) -> list:
    """The records of a wandb offline run file: LevelDB-log blocks of protobuf records."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0)
    records, pending, offset, block = [], b"", 7, 32768
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # a block's tail too short for a header is padding
            offset += block - offset % block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_wandb_offline_writes_each_run_with_its_keys_and_curve(store, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install '.[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec = TrackingSpec(kind="wandb", project="tiny", dir=str(tmp_path))
    assert track_study(store, spec, study="tiny", tables=lambda: TABLES) == len(RUNS)
    import wandb

    wandb.teardown()  # wait for wandb's service to flush every run file before reading them
    files = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == len(RUNS) + 1
    found = {}
    for path in files:
        records = _wandb_records(path)
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        history = [{i.key or "/".join(i.nested_key): i.value_json for i in r.history.item}
                   for r in records if r.WhichOneof("record_type") == "history"]  # fmt: skip
        found[run.display_name] = (set(run.tags), history)
    assert set(found) == {*RUNS, "tiny-attribution"}
    for run_id, (method, arm, k, seed) in RUNS.items():
        tags, history = found[run_id]
        assert {f"method={method}", f"arm={arm}", f"k={k}", f"seed={seed}"} <= tags
        losses = [float(h["train/loss"]) for h in history if "train/loss" in h]
        assert losses == train_log()["loss"].to_list()
        assert any("eval/delta" in h for h in history)


def test_trackio_writes_locally(store, tmp_path, monkeypatch):
    """trackio keeps a project in ``$TRACKIO_DIR/<project>.db`` (SQLite): one metrics row
    per logged step, one config row per run."""
    pytest.importorskip("trackio", reason="trackio is not installed (pip install '.[trackio]'; "
                        "it needs pillow < 13, so the dev extra leaves it out)")  # fmt: skip
    import json
    import sqlite3

    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    spec = TrackingSpec(kind="trackio", project="tiny")
    assert track_study(store, spec, study="tiny", tables=lambda: TABLES) == len(RUNS)
    db = sqlite3.connect(tmp_path / "trackio" / "tiny.db")
    rows = db.execute("select run_name, step, metrics from metrics order by id").fetchall()
    for run_id in RUNS:
        logged = [json.loads(m) for name, _, m in rows if name == run_id]
        assert [m["train/loss"] for m in logged if "train/loss" in m] == train_log()[
            "loss"
        ].to_list()
        assert any("eval/delta" in m for m in logged)
        (config,) = db.execute("select config from configs where run_name = ?", (run_id,))
        assert json.loads(config[0])["arm"] == RUNS[run_id][1]
    assert any(name == "tiny-attribution" and "decomposition" in json.loads(m)
               for name, _, m in rows)  # fmt: skip
