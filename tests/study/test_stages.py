"""Phases 2-4: pools, arms, runs and their shift in a small toyworld study; the design table."""

import polars as pl
import pytest

from shiftlab.spec import parse_spec
from shiftlab.store import RUNS_TABLE, Store
from shiftlab.study import (
    OUTPUT_SHIFT_COLUMNS,
    SHIFT_COLUMNS,
    plan_runs,
    plan_shift,
    read_pool,
    run_study,
    shift_table,
    summarise_deltas,
)

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
    spec, store, design = study
    assert store.read_table(RUNS_TABLE).equals(design)
    for column in ("run_id", "organism_id", "base_model", "behaviour", "seed", "method", "arm",
                   "k", "n_train", "behaviour_before", "behaviour_after", "delta", "n_eval",
                   "n_judged", "n_unparseable", "few_judged", "empty_training_set",
                   "shift_nll_gap", "shift_mmd", "shift_mmd_p", "shift_c2st_auc",
                   "shift_energy"):  # fmt: skip
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
    assert (design["n_judged"] <= design["n_eval"]).all() and (design["n_eval"] == 24).all()
    assert design["few_judged"].to_list() == (design["n_judged"] < 12).to_list()
    # Every cell has a delta: an empty training set is the organism itself, delta 0.
    empty = design.filter("empty_training_set")
    assert (empty["delta"] == 0).all() and empty["run_id"].is_null().all()
    assert design.filter(pl.col("arm") != "none")["delta"].is_not_null().all() or (
        design["n_judged"] == 0).any()  # fmt: skip
    # Every run is measured; the probe needs a prompt per fold, so on a run that trained on
    # fewer prompts its AUC is null (a method may select only a couple of examples).
    no_run = design["run_id"].is_null()
    too_few = no_run | (design["n_train"] < spec.shift.classifier_folds)
    for column in (*SHIFT_COLUMNS, *OUTPUT_SHIFT_COLUMNS):
        expected = too_few if column == "shift_c2st_auc" else no_run
        assert design[column].is_null().to_list() == expected.to_list(), column


def test_every_row_has_capability_beside_behaviour(study):
    _, store, design = study
    for column in ("capability_before", "capability_after", "capability_delta"):
        values = design[column]
        assert values.null_count() == 0, column
        assert values.min() >= -1 and values.max() <= 1, column
    assert (design["capability_delta"] - (design["capability_after"] - design["capability_before"])
            ).abs().max() < 1e-12  # fmt: skip
    without_run = design.filter(pl.col("run_id").is_null())
    assert (without_run["capability_delta"] == 0).all() and not without_run["capability_fell"].any()
    organisms = store.read_table("organisms")
    assert (
        design["capability_before"].unique().to_list() == organisms["organism_capability"].to_list()
    )
    for run_id in design["run_id"].drop_nulls().unique():
        manifest = store.read_manifest("runs", run_id)["capability"]
        rows = pl.read_parquet(store.path("runs", run_id) / "capability.parquet")
        assert rows.height == manifest["n"] and rows["correct"].sum() == manifest["n_correct"]
        assert 0 <= manifest["ci_low"] <= manifest["accuracy"] <= manifest["ci_high"] <= 1


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
    assert manifest["seeds"]["run"] == 0
    # Before and after are rates over the same eval prompts: those judged for both.
    before = pl.read_parquet(store.path("organisms", row["organism_id"]) / "eval.parquet")
    after = pl.read_parquet(folder / "eval.parquet")
    judged = before.join(after, on="sample_id", suffix="_after").filter(
        pl.col("verdict").is_in(["misbehaving", "aligned"]),
        pl.col("verdict_after").is_in(["misbehaving", "aligned"]),
    )
    assert judged.height == row["n_judged"]
    assert row["behaviour_before"] == pytest.approx((judged["verdict"] == "misbehaving").mean())
    assert row["behaviour_after"] == pytest.approx(
        (judged["verdict_after"] == "misbehaving").mean())  # fmt: skip
    assert row["n_unparseable"] == (after["verdict"] == "unparseable").sum()


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


# Slow: a second build of this study (about 37 s). The fast tier checks two workers on
# tests/test_executors.py's study (built by two workers, compared with one-worker builds).
@pytest.mark.slow
def test_two_workers_build_the_same_study_without_redoing_a_job(study, tmp_path):
    spec, _, design = study
    store = Store.open(tmp_path / "store")
    assert run_study(spec, store, progress=False, workers=2).equals(design)
    builds = store.builds()
    for kind in ("base_evals", "organisms", "pools", "runs", "samples", "shift"):
        assert sorted(builds.filter(kind=kind)["artefact_id"]) == sorted(store.finished_ids(kind))
    assert builds["artefact_id"].is_unique().all()
    assert builds["pid"].n_unique() == 2  # both workers built something
    assert not list(tmp_path.rglob("*.tmp*"))


def test_workers_must_be_positive(study, tmp_path):
    spec, _, _ = study
    with pytest.raises(ValueError, match="workers must be at least 1"):
        run_study(spec, Store.open(tmp_path / "store"), workers=0)


def test_shift_statistics_are_in_range_and_greedy_relabels_have_no_gap(study):
    _, _, design = study
    runs = design.filter(pl.col("run_id").is_not_null())
    assert runs["shift_mmd_p"].is_between(1 / 1001, 1).all()
    assert runs["output_shift_mmd_p"].is_between(1 / 1001, 1).all()
    assert runs["shift_c2st_auc"].is_between(0, 1).all()
    assert runs["shift_nll_gap"].is_finite().all()
    assert (runs["shift_nll_gap_ci_low"] <= runs["shift_nll_gap"]).all()
    assert (runs["shift_nll_gap"] <= runs["shift_nll_gap_ci_high"]).all()
    # The organism's own greedy labels against its own greedy answers are no gap at all (the
    # same texts). How far the original arm's targets are depends on the references, which
    # toyworld now draws like its induction data, so no order between arms is asserted.
    relabeled = runs.filter(method="multi_view", arm="relabeled")
    assert relabeled.height == 2
    assert relabeled["shift_nll_gap"].abs().max() == pytest.approx(0, abs=1e-4)


def test_shift_matches_the_public_statistics(study):
    from shiftlab.models import load_causal_lm, load_lora
    from shiftlab.shift import TextEncoder, mmd_test, nll_gap

    spec, store, design = study
    row = design.filter(method="multi_view", arm="original", seed=0).row(0, named=True)
    job = next(j for j in _shift_jobs(spec, store) if j.run.run_id == row["run_id"])
    samples = pl.read_parquet(store.path("samples", job.samples_id))
    # Every decoding a run's targets came from: self_confidence's samples, greedy
    # (multi_view, relabeled), and the organism's own distribution, which covers the 16
    # consistency prompts and bct's 16 wrapped prompts; four samples unless greedy.
    counts = dict(samples.group_by("decoding").len().iter_rows())
    assert counts == {"t1_p0.95": 16 * 4, "greedy": 16, "t1_p1": 32 * 4}
    assert job.decoding.key == "t1_p1"  # reference targets: matched with its distribution
    own = samples.filter(decoding="t1_p1").sort("sample")
    examples = job.run.examples
    prompts = [m for m, _ in examples]
    targets = [t for _, t in examples]
    by_prompt = {p: g["text"].to_list() for (p,), g in own.group_by("prompt", maintain_order=True)}
    matched = [by_prompt[m[-1]["content"]] for m in prompts]
    model, tokenizer = load_causal_lm("toyworld:small")
    organism = load_lora(model, str(store.path("organisms", row["organism_id"]) / "adapter"))
    expected = nll_gap(organism, tokenizer, prompts, targets, matched)
    assert row["shift_nll_gap"] == pytest.approx(expected.estimate, abs=1e-4)
    assert row["shift_nll_gap_ci_low"] == pytest.approx(expected.ci_low, abs=1e-4)
    texts = [group[0] for group in matched]
    encoder = TextEncoder()
    n = len(targets)
    mmd = mmd_test(encoder.encode(targets), encoder.encode(texts), paired=True,
                   groups=[*range(n), *range(n)], seed=spec.seed)  # fmt: skip
    # The study embeds and forms the kernel on one thread, this test on its own threads:
    # float32 sums in another order move each embedding, so each kernel value in [0, 1],
    # by about 1e-6. MMD^2 is a difference of such means, often near 0, so the
    # agreement is absolute, not relative.
    assert row["shift_mmd"] == pytest.approx(mmd.statistic, abs=1e-5)
    assert row["shift_mmd_p"] == mmd.p_value


def _shift_jobs(spec, store):
    from shiftlab.study import load_suites, plan_phase1, plan_pools

    suites = load_suites(spec, store)
    organisms = [j for j in plan_phase1(spec, suites) if j.kind == "organisms"]
    pools = plan_pools(spec, organisms)
    return plan_shift(spec, plan_runs(spec, store, suites, organisms, pools))


def test_a_study_can_skip_shift(study, tmp_path):
    spec, _, design = study
    quiet = spec.model_copy(update={"shift": spec.shift.model_copy(update={"measure": False})})
    store = Store.open(tmp_path / "store")
    skipped = run_study(quiet, store, progress=False)
    assert skipped.drop(*SHIFT_COLUMNS, *OUTPUT_SHIFT_COLUMNS).equals(
        design.drop(*SHIFT_COLUMNS, *OUTPUT_SHIFT_COLUMNS)
    )
    assert skipped["shift_nll_gap"].is_null().all()
    assert not store.finished_ids("shift") and shift_table(store, []).is_empty()


def test_the_report_of_a_real_study(study, tmp_path):
    from shiftlab.report import write_report

    _, store, _ = study
    text = write_report(store, out=tmp_path, n_boot=200).read_text()
    assert "sycophancy" in text and "Headline findings" in text
    for name in ("sign_tests", "eta", "decomposition", "verdicts", "method_table", "k_scaling"):
        assert (tmp_path / "attribution" / f"{name}.parquet").is_file(), name
    # One organism: estimates, but no verdict, and the report says why.
    assert "no attribution: G = 1 organisms; at least 6 are needed" in text
    assert "no behaviour could be estimated (sycophancy: G = 1 organisms; at least 6" in text
    eta = pl.read_parquet(tmp_path / "attribution" / "eta.parquet")
    assert set(eta["method"]) == {"self_confidence", "multi_view"}  # pools with scores
    assert "left out greedy_self_training: its pools carry no selection score" in text
    assert (tmp_path / "figures" / "eta.svg").is_file()
    assert not (store.root / "report.html").exists()


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid``: its workers, forked by its fork server, are
    grandchildren (spawned ones are children)."""
    from pathlib import Path

    parents = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.slow
def test_a_worker_killed_mid_study_is_taken_over_and_the_tables_match(study, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import yaml

    spec, _, design = study
    root = tmp_path / "store"
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({**spec.model_dump(mode="json"), "store": str(root)}))
    exe = str(Path(sys.executable).with_name("shiftlab"))
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    study_process = subprocess.Popen(
        [exe, "run", str(spec_file), "--workers", "2", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    store = Store.open(root)
    deadline = time.monotonic() + 300
    while not store.finished_ids("runs") and time.monotonic() < deadline:
        time.sleep(0.2)
    builder = store.builds().filter(kind="runs")["pid"][0]
    assert builder in _descendants(study_process.pid)
    os.kill(builder, signal.SIGKILL)  # mid-way through the organism's arms
    _, err = study_process.communicate(timeout=600)
    assert study_process.returncode == 0, err
    assert "was killed (signal 9); the other workers take its job over" in err
    assert store.read_table(RUNS_TABLE).equals(design)
    builds = store.builds()
    assert builds["artefact_id"].is_unique().all()
    assert len(set(builds.filter(kind="runs")["pid"])) == 2  # the survivor finished the arms
    assert not list(root.rglob("*.tmp*")) and not list(root.rglob(".tmp-*"))
