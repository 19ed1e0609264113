import polars as pl
import pytest

from shiftlab.pipeline import plan_phase1, run_study, study_status
from shiftlab.spec import parse_spec
from shiftlab.store import Store

SPEC = {
    "base_models": [{"name": "toy", "path": "toyworld:small"}],
    "behaviours": [
        {
            "name": "spurious_correlation",
            "toyworld": {"n_induction": 128, "n_eval": 48},
            "induction": {"steps": 60, "learning_rate": 5e-3},
        }
    ],
    "organisms": {"seeds": [0]},
    "eval": {"max_new_tokens": 8},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, toy_model_dir):
    store = Store.open(tmp_path_factory.mktemp("store"))
    spec = parse_spec(SPEC)
    table = run_study(spec, store, progress=False)
    return spec, store, table


def test_induction_moves_the_behaviour_rate(finished):
    _, _, table = finished
    row = table.row(0, named=True)
    assert row["base_rate"] == 0.0
    assert row["organism_rate"] > 0.5
    assert row["ci_low"] > row["base_ci_high"]


def test_artefacts_and_manifests(finished):
    _spec, store, table = finished
    (organism_id,) = store.finished_ids("organisms")
    folder = store.path("organisms", organism_id)
    assert (folder / "adapter" / "adapter_config.json").is_file()
    log = pl.read_parquet(folder / "train_log.parquet")
    assert log.height == 60
    rows = pl.read_parquet(folder / "eval.parquet")
    assert rows.columns == ["sample_id", "prompt", "output", "verdict", "score", "mean_logprob"]
    manifest = store.read_manifest("organisms", organism_id)
    assert manifest["seeds"] == {"organism": 0, "study": 0}
    assert manifest["config"]["induction"]["steps"] == 60
    assert manifest["metrics"]["n"] == 48
    assert store.read_table("organisms").equals(table)
    assert (store.root / "study.yaml").is_file() and (store.root / "manifest.json").is_file()


def test_rerun_is_a_no_op(finished, monkeypatch):
    spec, store, table = finished
    import shiftlab.pipeline as pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("a finished study must not load or train anything")

    monkeypatch.setattr(pipeline, "load_causal_lm", refuse)
    monkeypatch.setattr(pipeline, "train_sft", refuse)
    assert run_study(spec, store, progress=False).equals(table)


def test_same_spec_and_seed_gives_identical_tables(finished, tmp_path):
    spec, _, table = finished
    again = run_study(spec, Store.open(tmp_path), progress=False)
    assert again.drop("organism_id").equals(table.drop("organism_id"))
    assert again["organism_id"].to_list() == table["organism_id"].to_list()


def test_resume_after_losing_an_artefact(finished, tmp_path):
    """Only the missing artefact is rebuilt; the others are reused."""
    spec, _, _ = finished
    store = Store.open(tmp_path)
    run_study(spec, store, progress=False)
    (organism_id,) = store.finished_ids("organisms")
    (store.path("organisms", organism_id) / "manifest.json").unlink()
    before = store.finished_ids("base_evals")
    status = study_status(store, spec)
    assert status.filter(~pl.col("finished"))["artefact_id"].to_list() == [organism_id]
    run_study(spec, store, progress=False)
    assert store.is_finished("organisms", organism_id)
    assert store.finished_ids("base_evals") == before


def test_ids_change_with_what_they_depend_on():
    spec = parse_spec(SPEC)
    other_seed = parse_spec({**SPEC, "organisms": {"seeds": [1]}})
    from shiftlab.behaviours import load_suite

    def ids(s):
        return [
            j.artefact_id for j in plan_phase1(s, {b.name: load_suite(b) for b in s.behaviours})
        ]

    a, b = ids(spec), ids(other_seed)
    assert a[0] == b[0]  # the base evaluation does not depend on organism seeds
    assert a[1] != b[1]
