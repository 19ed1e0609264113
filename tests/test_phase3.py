"""Phases 2 and 3: pools, arms and runs of a small toyworld study, and the design table."""

import polars as pl
import pytest

from shiftlab.pipeline import RUNS_TABLE, read_pool, run_study, summarise_deltas
from shiftlab.spec import parse_spec
from shiftlab.store import Store

SPEC = {
    "base_models": [{"name": "toy", "path": "toyworld:small"}],
    "behaviours": [
        {
            "name": "sycophancy",
            "toyworld": {"n_induction": 128, "n_consistency": 16, "n_pairs": 16, "n_eval": 24},
            "induction": {"steps": 40, "learning_rate": 1e-2},
        }
    ],
    "organisms": {"seeds": [0]},
    "methods": [
        {"name": "self_confidence", "n_candidates": 3, "k_values": [1]},
        "multi_view",
        "bct",
    ],
    "runs": {"seeds": [0, 1], "training": {"steps": 4, "batch_size": 8, "packing": "bfd"}},
    "eval": {"max_new_tokens": 12},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory, toy_model_dir):
    store = Store.open(tmp_path_factory.mktemp("store"))
    spec = parse_spec(SPEC)
    return spec, store, run_study(spec, store, progress=False)


def test_design_table_has_a_row_per_cell(study):
    _, store, design = study
    assert store.read_table(RUNS_TABLE).equals(design)
    for column in ("run_id", "organism_id", "base_model", "behaviour", "seed", "method", "arm",
                   "k", "n_train", "behaviour_before", "behaviour_after", "delta", "shift_kl",
                   "shift_mmd", "shift_mmd_p", "shift_c2st_auc", "shift_energy"):  # fmt: skip
        assert column in design.columns
    cells = design.select("method", "arm", "k", "seed").rows()
    assert len(cells) == len(set(cells))
    # self_confidence: 5 arms + k=1; multi_view: 5 arms; bct: full + none; two seeds each.
    assert design.height == 2 * (6 + 5 + 2)
    finite = design.filter(pl.col("behaviour_after").is_not_null())
    assert (
        finite["delta"] - (finite["behaviour_after"] - finite["behaviour_before"])
    ).abs().max() < 1e-12
    none = design.filter(arm="none")
    assert none["run_id"].is_null().all() and (none["delta"] == 0).all()
    assert design["shift_kl"].is_null().all()


def test_identical_data_shares_one_run(study):
    _, store, design = study
    relabeled = design.filter(arm="relabeled")
    assert relabeled.group_by("seed").agg(pl.col("run_id").n_unique())["run_id"].to_list() == [1, 1]
    run_ids = set(design["run_id"].drop_nulls())
    assert set(store.finished_ids("runs")) == run_ids
    # Shuffling depends on the run seed, the other arms do not.
    full = design.filter(method="self_confidence", arm="full", k=3)
    assert full["run_id"].n_unique() == 2  # the training seed differs


def test_runs_keep_adapter_log_eval_and_targets(study):
    _, store, design = study
    row = design.filter(method="self_confidence", arm="full", k=3, seed=0).row(0, named=True)
    folder = store.path("runs", row["run_id"])
    for name in ("adapter", "train_log.parquet", "eval.parquet", "targets.parquet"):
        assert (folder / name).exists()
    targets = pl.read_parquet(folder / "targets.parquet")
    assert targets.height == row["n_train"] == 16
    manifest = store.read_manifest("runs", row["run_id"])
    assert manifest["metrics"]["rate"] == row["behaviour_after"]
    assert manifest["seeds"]["run"] == 0


def test_pools_are_stored_as_parquet_files(study):
    _, store, _ = study
    ids = store.finished_ids("pools")
    assert {i.split("__")[-2] for i in ids} == {
        "self_confidence",
        "multi_view",
        "greedy_self_training",
    }
    for pool_id in ids:
        assert store.path("pools", pool_id).suffix == ".parquet"
        assert read_pool(store, pool_id)["prompt_id"].n_unique() == 16
    assert not list((store.root / "pools").glob(".tmp-*"))


def test_rerun_is_a_no_op_and_summary_has_every_cell(study):
    spec, store, design = study
    again = run_study(spec, store, progress=False)
    assert again.equals(design)
    summary = summarise_deltas(design)
    assert set(summary["arm"]) == {"full", "shuffled", "relabeled", "original", "none"}
    assert summary.filter(method="bct")["arm"].to_list() == ["full", "none"]


def test_two_workers_build_the_same_study_without_redoing_a_job(study, tmp_path):
    spec, _, design = study
    store = Store.open(tmp_path / "store")
    assert run_study(spec, store, progress=False, workers=2).equals(design)
    builds = store.builds()
    for kind in ("base_evals", "organisms", "pools", "runs"):
        assert sorted(builds.filter(kind=kind)["artefact_id"]) == sorted(store.finished_ids(kind))
    assert builds["artefact_id"].is_unique().all()
    assert builds["pid"].n_unique() == 2  # both workers built something
    assert not list(tmp_path.rglob("*.tmp*"))


def test_workers_must_be_positive(study, tmp_path):
    spec, _, _ = study
    with pytest.raises(ValueError, match="workers must be at least 1"):
        run_study(spec, Store.open(tmp_path / "store"), workers=0)
