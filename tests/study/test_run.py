import polars as pl
import pytest

from shiftlab.errors import ShiftlabError, StoreError
from shiftlab.spec import parse_spec
from shiftlab.store import Store
from shiftlab.study import load_suites, plan_phase1, run_study, study_status
from spec_helpers import TINY_STUDY, changed

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
    assert rows.columns == [
        "sample_id", "prompt_id", "prompt", "output", "verdict", "score", "value", "group",
        "detail", "mean_logprob", "n_tokens",
    ]  # fmt: skip
    manifest = store.read_manifest("organisms", organism_id)
    assert manifest["seeds"] == {"organism": 0, "study": 0}
    assert manifest["config"]["induction"]["steps"] == 60
    assert manifest["metrics"]["n"] == 48
    assert store.read_table("organisms").equals(table)
    assert (store.root / "study.yaml").is_file() and (store.root / "manifest.json").is_file()


def test_the_organism_table_records_strength_and_stability_apart(finished):
    spec, store, table = finished
    (organism_id,) = store.finished_ids("organisms")
    row = table.row(0, named=True)
    assert row["rate_definition"] == "greedy"
    assert row["references"].startswith("dataset responses") and row["calibrated"] is None
    # Strength: the rate over every judged temperature-1 sample of the eval prompts.
    sampled = pl.read_parquet(store.path("organisms", organism_id) / "eval_sampled.parquet")
    k = spec.eval.strength_samples_for(judged=False)  # toyworld: rules score it
    assert sampled.height == 48 * k and sampled["prompt_id"].n_unique() == 48
    judged = sampled.filter(pl.col("verdict").is_in(["misbehaving", "aligned"]))
    bad = int((judged["verdict"] == "misbehaving").sum())
    assert row["strength_n_judged"] == judged.height
    assert row["strength"] == pytest.approx(bad / judged.height, abs=1e-12)
    assert 0 <= row["strength_ci_low"] <= row["strength"] <= row["strength_ci_high"] <= 1
    # Stability: the misbehaving samples' per-token log-prob against the aligned answer's.
    assert row["n_misbehaving_samples"] == bad > 0
    gap = row["misbehaving_logprob"] - row["aligned_logprob"]
    assert row["stability"] == pytest.approx(gap, abs=1e-12)
    assert row["misbehaving_logprob"] == pytest.approx(
        judged.filter(verdict="misbehaving")["mean_logprob"].mean(), abs=1e-12
    )
    assert row["misbehaving_entropy"] is not None


def test_rerun_is_a_no_op(finished, monkeypatch):
    spec, store, table = finished
    from shiftlab.study import _claims, _organisms

    def refuse(*args, **kwargs):
        raise AssertionError("a finished study must not load or train anything")

    monkeypatch.setattr(_claims, "load_causal_lm", refuse)
    monkeypatch.setattr(_organisms, "train_sft", refuse)
    assert run_study(spec, store, progress=False).equals(table)


def test_same_spec_and_seed_gives_identical_tables_and_artefacts(finished, tmp_path):
    spec, store, table = finished
    again_store = Store.open(tmp_path)
    assert run_study(spec, again_store, progress=False).equals(table)
    (organism_id,) = store.finished_ids("organisms")
    for name in ("train_log.parquet", "eval.parquet"):
        a = pl.read_parquet(store.path("organisms", organism_id) / name)
        b = pl.read_parquet(again_store.path("organisms", organism_id) / name)
        timing = ["seconds", "tokens_per_second"]
        assert a.drop(timing, strict=False).equals(b.drop(timing, strict=False))


def test_organisms_on_one_resident_base_equal_organisms_alone(finished, tmp_path):
    """Several organisms induced one after another from one loaded base equal each alone:
    taking the adapter out restores the base exactly."""
    _, _, table = finished
    both = parse_spec({**SPEC, "organisms": {"seeds": [1, 0]}})
    shared = run_study(both, Store.open(tmp_path), progress=False)
    assert shared.filter(pl.col("seed") == 0).drop("organism_id").equals(table.drop("organism_id"))


def test_a_store_holds_one_study(finished):
    _, store, _ = finished
    other = parse_spec({**SPEC, "organisms": {"seeds": [5]}})
    with pytest.raises(StoreError, match="holds a different study"):
        run_study(other, store, progress=False)


def test_resume_after_losing_an_artefact(finished, tmp_path):
    """Only the missing artefact is rebuilt; the others are reused."""
    spec, _, _ = finished
    store = Store.open(tmp_path)
    run_study(spec, store, progress=False)
    (organism_id,) = store.finished_ids("organisms")
    (store.path("organisms", organism_id) / "manifest.json").unlink()
    (base_eval_id,) = store.finished_ids("base_evals")
    base_manifest = store.path("base_evals", base_eval_id) / "manifest.json"
    stamp = base_manifest.stat().st_mtime_ns
    status = study_status(store, spec)
    assert status.filter(~pl.col("finished"))["artefact_id"].to_list() == [organism_id]
    run_study(spec, store, progress=False)
    assert store.is_finished("organisms", organism_id)
    assert base_manifest.stat().st_mtime_ns == stamp  # not rebuilt


def ids(data: dict) -> tuple[str, str]:
    spec = parse_spec(data)
    base_eval, organism = plan_phase1(spec, load_suites(spec))
    return base_eval.artefact_id, organism.artefact_id


@pytest.mark.parametrize(
    ("path", "value", "base_eval_changes"),
    [
        (["organisms", "seeds"], [1], False),
        (["behaviours", 0, "induction", "steps"], 61, False),
        (["behaviours", 0, "induction", "lora"], {"r": 4}, False),
        (["behaviours", 0, "toyworld", "n_variants"], 2, True),
        (["behaviours", 0, "toyworld", "data_seed"], 3, True),
        (["eval", "max_new_tokens"], 9, True),
        (["base_models", 0, "dtype"], "bfloat16", True),
    ],
)
def test_ids_change_with_what_they_depend_on(path, value, base_eval_changes):
    base_eval, organism = ids(SPEC)
    new_base_eval, new_organism = ids(changed(SPEC, path, value))
    assert new_organism != organism
    assert (new_base_eval != base_eval) == base_eval_changes


def test_ids_ignore_what_does_not_change_results():
    assert ids(SPEC) == ids(changed(SPEC, ["eval", "batch_size"], 7))
    assert ids(SPEC) == ids(changed(SPEC, ["name"], "renamed"))


def test_checkpointed_induction_gives_the_same_organism_and_cleans_up(finished, tmp_path):
    _, store, table = finished
    spec = parse_spec(changed(SPEC, ["behaviours", 0, "induction", "checkpoint_every"], 25))
    checkpointed = Store.open(tmp_path)
    again = run_study(spec, checkpointed, progress=False)
    assert again["organism_rate"].to_list() == table["organism_rate"].to_list()
    (a,), (b,) = store.finished_ids("organisms"), checkpointed.finished_ids("organisms")
    timing = ["seconds", "tokens_per_second"]
    log_a = pl.read_parquet(store.path("organisms", a) / "train_log.parquet").drop(timing)
    log_b = pl.read_parquet(checkpointed.path("organisms", b) / "train_log.parquet").drop(timing)
    assert log_a.equals(log_b)
    assert not any((checkpointed.root / ".checkpoints").rglob("*"))


def test_a_judged_suite_measures_no_strength_unless_asked():
    """``strength_samples: auto`` samples rule-scored suites only: a judge would be paid for
    every one of the samples, so a judged suite's organism measures nothing (and touches
    no model); an explicit count still measures it."""
    from dataclasses import replace

    from shiftlab.behaviours import BehaviourScorer
    from shiftlab.study._organisms import measure_strength
    from spec_helpers import TINY_STUDY

    class Judged(BehaviourScorer):
        def needs_judge(self, examples):
            return True

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"the model was used ({name})")

    spec = parse_spec(TINY_STUDY, "tiny.yaml")
    (suite,) = load_suites(spec).values()
    judged = replace(suite, scorer=Judged())
    model = Untouchable()
    assert measure_strength(model, None, judged, spec, pl.DataFrame()) == (None, {})
    asked = parse_spec(changed(TINY_STUDY, ["eval", "strength_samples"], 2), "tiny.yaml")
    # It goes on to evaluate, which asks for the judge this suite does not have.
    with pytest.raises(ShiftlabError, match="judged by a model"):
        measure_strength(model, None, judged, asked, pl.DataFrame())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, toy_model_dir):
    store = Store.open(tmp_path_factory.mktemp("tiny"))
    spec = parse_spec(TINY_STUDY)
    return spec, store, run_study(spec, store, progress=False)


def test_a_finished_study_starts_no_workers(tiny, monkeypatch):
    spec, store, design = tiny
    from shiftlab.study import _run

    def refuse(*args, **kwargs):
        raise AssertionError("a finished study must start no worker process")

    monkeypatch.setattr(_run, "WorkerPool", refuse)
    assert run_study(spec, store, progress=False, workers=2).equals(design)
    # Work left (a lost run): the workers start.
    run_id = design.drop_nulls("run_id")["run_id"][0]
    store.remove("runs", run_id)
    with pytest.raises(AssertionError, match="no worker process"):
        run_study(spec, store, progress=False, workers=2)
    monkeypatch.undo()
    assert run_study(spec, store, progress=False, workers=1).equals(design)


def test_a_finished_study_records_what_it_was_built_from(tiny):
    from shiftlab._finished import study_is_finished

    spec, store, _ = tiny
    assert study_is_finished(store, spec.to_yaml())
    other = parse_spec(changed(TINY_STUDY, ["organisms", "seeds"], [1]))
    assert not study_is_finished(store, other.to_yaml())
    record = store.root / "tables" / ".study.json"
    kept = record.read_bytes()
    record.write_bytes(kept[: len(kept) // 2])  # damaged: rerun as if not finished
    assert not study_is_finished(store, spec.to_yaml())
    run_study(spec, store, progress=False)
    assert study_is_finished(store, spec.to_yaml())
