"""`shiftlab repro`: fingerprints of a finished store, re-execution of sampled runs."""

import hashlib
import io
import json
import re
import shutil

import numpy as np
import polars as pl
import pytest

from shiftlab._environment import cpu_class
from shiftlab._hashing import content_hash
from shiftlab.cli import main
from shiftlab.errors import StoreError
from shiftlab.repro import (
    FINGERPRINTS,
    Tolerances,
    check_reproduction,
    compare_losses,
    compare_rates,
    compare_statistic,
    record_fingerprints,
)
from shiftlab.spec import parse_spec
from shiftlab.store import MANIFEST, Store
from shiftlab.study import run_study
from spec_helpers import TINY_STUDY

SPEC = TINY_STUDY


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, toy_model_dir):
    store = Store.open(tmp_path_factory.mktemp("recorded"))
    run_study(parse_spec(SPEC), store, progress=False)
    record_fingerprints(store)
    return store


@pytest.fixture()
def copy(recorded, tmp_path):
    """A copy of the recorded store to plant a change in."""
    root = tmp_path / "store"
    shutil.copytree(recorded.root, root, symlinks=True)
    return Store.open(root)


def _edit_run_config(store: Store, run_id: str, edit) -> None:
    """Change a run's manifest consistently (config and its hash), as a rebuilt run would."""
    path = store.manifest_path("runs", run_id)
    manifest = json.loads(path.read_text())
    edit(manifest["config"])
    manifest["config_hash"] = content_hash(manifest["config"])
    path.write_text(json.dumps(manifest))


def _rewrite(store: Store, kind: str, artefact_id: str, name: str, data: bytes) -> None:
    """Replace one file of an artefact and its record in the manifest, as a rebuild that
    came out different would (an edit alone is damage, which every command refuses)."""
    (store.files_base(kind, artefact_id) / name).write_bytes(data)
    path = store.manifest_path(kind, artefact_id)
    manifest = json.loads(path.read_text())
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    path.write_text(json.dumps(manifest))


def _failures(report) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for finding in report.failures():
        found.setdefault(finding.artefact, []).append(f"{finding.check}: {finding.detail}")
    return found


def test_a_clean_rerun_reproduces_every_run(recorded, tmp_path):
    record = json.loads((recorded.root / FINGERPRINTS).read_text())
    assert len(record["runs"]) == 2 and all(r["losses"] for r in record["runs"].values())
    builds = recorded.builds().height
    report = check_reproduction(recorded, sample=None, scratch=tmp_path, progress=False)
    assert report.ok, report.format()
    checks = {f.check for f in report.findings}
    assert {"train_log loss", "eval rate", "capability", "targets.parquet (exact)",
            "shift_mmd_p"} <= checks  # fmt: skip
    assert "eval.parquet (exact)" in checks and not report.notes  # same CPU class: bit for bit
    assert report.n_verified == len(record["files"]) and len(report.runs) == 2
    # The re-executed runs were built in the scratch store; the store was only read.
    assert sorted(Store.open(tmp_path).finished_ids("runs")) == report.runs
    assert recorded.builds().height == builds


def test_a_capability_that_moved_beyond_sampling_error_is_named(copy):
    path = copy.root / FINGERPRINTS
    record = json.loads(path.read_text())
    run_id = sorted(record["runs"])[0]
    capability = record["runs"][run_id]["capability"]
    # Record a score at least half the questions away from the run's (none or all right):
    # far beyond what the two-proportion test can attribute to sampling.
    capability["n_correct"] = (
        0 if 2 * capability["n_correct"] >= capability["n"] else capability["n"]
    )
    path.write_text(json.dumps(record))
    report = check_reproduction(copy, sample=None, progress=False)
    found = _failures(report)
    assert capability["n"] >= 32  # half of 32 questions apart is p < 1e-5
    assert list(found) == [f"runs/{run_id}"], report.format()
    (detail,) = found[f"runs/{run_id}"]
    assert detail.startswith("capability: correct ") and "two-proportion" in detail


def test_runs_from_another_cpu_class_are_compared_statistically(copy):
    path = copy.root / FINGERPRINTS
    record = json.loads(path.read_text())
    # A class no machine running this test has (a real one could be this machine's own).
    other = {"vendor": "OtherVendor", "isa": "NO_AVX"}
    assert other != cpu_class()
    for run in record["runs"].values():
        run["cpu_class"] = other
    path.write_text(json.dumps(record))
    report = check_reproduction(copy, sample=1, progress=False)
    assert report.ok, report.format()
    checks = {f.check for f in report.findings}
    assert "targets.parquet (exact)" in checks and "train_log loss" in checks
    assert not {"eval.parquet (exact)", "adapter/adapter_model.safetensors (exact)"} & checks
    (note,) = report.notes
    assert "built on OtherVendor NO_AVX and this machine is" in note
    assert "statistical tolerances" in report.format()


def test_a_changed_learning_rate_is_named(copy):
    run_id = copy.finished_ids("runs")[0]
    _edit_run_config(copy, run_id, lambda c: c["training"].update(learning_rate=0.05))
    report = check_reproduction(copy, sample=None, progress=False)
    assert not report.ok
    failures = _failures(report)
    # The run, and the shift measured on its eval outputs; nothing else.
    assert {a.split("__shift-")[0] for a in failures} == {f"runs/{run_id}", f"shift/{run_id}"}
    assert any(f.startswith("train_log loss: step") for f in failures[f"runs/{run_id}"])
    assert any("training.learning_rate: 0.003 -> 0.05" in f for f in failures[f"runs/{run_id}"])


@pytest.mark.slow
def test_a_different_seed_is_named(copy):
    run_id = copy.finished_ids("runs")[1]
    _edit_run_config(copy, run_id, lambda c: c.update(seed=7))
    failures = _failures(check_reproduction(copy, sample=None, progress=False))
    assert {a.split("__shift-")[0] for a in failures} <= {f"runs/{run_id}", f"shift/{run_id}"}
    assert any(f.startswith("train_log loss") for f in failures[f"runs/{run_id}"])


def test_an_edited_pool_row_is_named(copy):
    (pool_id,) = copy.finished_ids("pools")
    pool = pl.read_parquet(copy.path("pools", pool_id))
    pool = pool.with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("edited")).otherwise("text").alias("text")
    )
    edited = io.BytesIO()
    pool.write_parquet(edited)
    _rewrite(copy, "pools", pool_id, f"{pool_id}.parquet", edited.getvalue())
    failures = _failures(check_reproduction(copy, sample=1, progress=False))
    assert failures[f"pools/{pool_id}.parquet"] == [
        f"content: changed since the record: 1 of {pool.height} rows differ: row 4"
    ]


@pytest.mark.slow
def test_the_cli_exits_1_with_a_diff_and_0_when_it_agrees(copy, capsys):
    assert main(["repro", "check", str(copy.root), "--sample", "1", "--no-progress"]) == 0
    assert "reproduced: " in capsys.readouterr().out
    copy.write_table("runs", copy.read_table("runs").with_columns(delta=pl.col("delta") + 1))
    assert main(["repro", "check", str(copy.root), "--sample", "1", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "DIFFERS tables/runs.parquet" in out and "NOT reproduced (1 artefacts)" in out


def test_missing_files_and_newer_versions_are_clear_errors(copy, capsys):
    run_id = copy.finished_ids("runs")[0]
    (copy.path("runs", run_id) / "train_log.parquet").unlink()
    with pytest.raises(StoreError, match="pass --force to replace it"):
        record_fingerprints(copy)
    with pytest.raises(StoreError, match=f"{run_id}/train_log.parquet: damaged: missing"):
        record_fingerprints(copy, force=True)
    fingerprints = copy.root / FINGERPRINTS
    fingerprints.write_text(json.dumps({**json.loads(fingerprints.read_text()), "format": 99}))
    with pytest.raises(StoreError, match="fingerprint format 99 is not one this shiftlab reads"):
        check_reproduction(copy)
    manifest = json.loads((copy.root / MANIFEST).read_text())
    (copy.root / MANIFEST).write_text(json.dumps({**manifest, "shiftlab_version": "9.0.0"}))
    assert main(["repro", "check", str(copy.root)]) == 2
    assert "built by shiftlab 9.0.0, newer than the installed" in capsys.readouterr().err
    (copy.root / MANIFEST).write_text(json.dumps(manifest))
    fingerprints.unlink()  # without a record the store is the reference: still refused
    with pytest.raises(StoreError, match=f"{run_id}/train_log.parquet: damaged: missing"):
        check_reproduction(copy)


def test_a_loss_drift_inside_the_tolerance_fails_and_noise_passes():
    rng = np.random.default_rng(0)
    line = np.linspace(3.0, 1.0, 60)
    curve = list(line)
    noise = rng.normal(0, 1e-4, 60)
    assert compare_losses(curve, list(line + noise)) is None
    drift = compare_losses(curve, list(line + 2e-4 + noise))
    assert drift is not None and drift.startswith("residuals drift one way: mean +0.0002")
    assert compare_losses(curve, list(line + 2e-4 + noise), Tolerances(drift_alpha=0)) is None
    assert "step 10" in compare_losses(curve, [*curve[:10], curve[10] + 0.01, *curve[11:]])
    assert compare_losses(curve, curve[:-1]) == "60 steps recorded, 59 now"


def test_p_values_get_a_monte_carlo_tolerance():
    assert compare_statistic("shift_mmd_p", 0.20, 0.23, 1000) is None
    assert compare_statistic("shift_mmd_p", 0.20, 0.40, 1000) is not None
    assert compare_statistic("shift_mmd", 0.20, 0.2000001, 1000) is None
    assert "recorded" in compare_statistic("shift_mmd", 0.20, 0.21, 1000)
    assert compare_statistic("shift_c2st_auc", None, None, 1000) is None
    assert compare_statistic("shift_c2st_auc", None, 0.5, 1000) == "None recorded, 0.5 now"
    assert compare_statistic("shift_mmd_p", 0.90, 0.99, 1000) is not None  # near 1 too
    assert compare_statistic("shift_mmd_p", 0.001, 0.004, 1000) is None


def test_rates_compare_judged_outputs_and_other_metrics_numerically():
    judged = {"n": 30, "n_misbehaving": 0, "n_unparseable": 6}
    assert compare_rates(judged, {**judged, "n_misbehaving": 8}) is not None  # 0/24 vs 8/24
    assert compare_rates(judged, {**judged, "n_misbehaving": 1}) is None
    assert compare_rates({}, {}) == "metrics missing recorded, missing now"
    score = {"rate": 41.5, "unit": "score_0_100", "n": 10}
    assert compare_rates(score, {**score, "rate": 41.5}) is None
    assert compare_rates(score, {**score, "rate": 44.0}) == "41.5 recorded, 44 now"


def test_nan_steps_agree_with_nan():
    nan = float("nan")
    assert compare_losses([1.0, nan], [1.0, nan]) is None
    assert compare_losses([1.0, 2.0], [1.0, nan]) == "step 1: loss 2.0 recorded, nan now"


@pytest.mark.slow  # reads a whole `shiftlab demo` store (minutes to build)
def test_the_demo_reproduces_from_the_cli(demo_store, capsys):
    # Straight after `shiftlab demo`: the store's own artefacts are the reference.
    assert main(["repro", "check", str(demo_store), "--sample", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "re-executed 3 runs" in out and "note: no recorded fingerprints" in out
    agreed = re.search(r"reproduced: (\d+) of (\d+) comparisons agree", out)
    assert agreed and agreed[1] == agreed[2] and int(agreed[1]) >= 3 * 5, out
    assert main(["repro", "record", str(demo_store)]) == 0
    assert (demo_store / FINGERPRINTS).is_file()


def test_scratch_must_be_new_and_outside_the_store(recorded, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "runs").mkdir()
    with pytest.raises(StoreError, match="must be a new or empty folder"):
        check_reproduction(recorded, scratch=tmp_path / "used", progress=False)
    with pytest.raises(StoreError, match="must be outside the store"):
        check_reproduction(recorded, scratch=recorded.root / "x", progress=False)


@pytest.mark.slow
def test_a_store_without_shift_is_checked_without_it(copy):
    for shift_id in copy.finished_ids("shift"):
        copy.path("shift", shift_id).unlink()
        copy.manifest_path("shift", shift_id).unlink()
    record_fingerprints(copy, force=True)
    report = check_reproduction(copy, sample=1, progress=False)
    assert report.ok, report.format()
    assert not [f for f in report.findings if f.artefact.startswith("shift/")]


@pytest.mark.slow
def test_every_listed_file_is_fingerprinted(copy):
    (organism,) = copy.finished_ids("organisms")
    config = copy.path("organisms", organism) / "adapter" / "adapter_config.json"
    edited = config.read_text().replace('"r": ', '"r":  ').encode()
    _rewrite(copy, "organisms", organism, "adapter/adapter_config.json", edited)
    failures = _failures(check_reproduction(copy, sample=1, progress=False))
    assert failures[f"organisms/{organism}/adapter/adapter_config.json"] == [
        "content: changed since the record: bytes differ"
    ]
