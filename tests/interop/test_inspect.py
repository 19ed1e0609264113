"""`shiftlab export inspect`: a store's evaluations as inspect_ai logs, read back by
inspect_ai itself."""

import polars as pl
import pytest

pytest.importorskip("inspect_ai", reason="inspect-ai is not installed (pip install '.[inspect]')")

from inspect_ai.analysis import evals_df, samples_df
from inspect_ai.log import list_eval_logs, read_eval_log

from shiftlab.cli import main
from shiftlab.interop import export_inspect
from store_helpers import BASE_EVAL, ORGANISM, RUNS, write_small_store


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    store = write_small_store(root / "store")
    return store, export_inspect(store, root / "logs")


def test_one_log_per_run_organism_and_base_evaluation(exported):
    _, paths = exported
    names = sorted(p.name for p in paths)
    expected = [f"base_evals-{BASE_EVAL}.eval", f"organisms-{ORGANISM}.eval",
                *(f"runs-{r}.eval" for r in sorted(RUNS))]  # fmt: skip
    assert names == expected
    assert len(list_eval_logs(str(paths[0].parent))) == len(expected)  # what inspect view lists


@pytest.mark.parametrize("kind", ["base_evals", "organisms", "runs"])
def test_samples_and_scores_match_eval_parquet(exported, kind):
    store, paths = exported
    for path in (p for p in paths if p.name.startswith(f"{kind}-")):
        artefact_id = path.stem.removeprefix(f"{kind}-")
        evals = store.read_parquet(kind, artefact_id, "eval.parquet")
        log = read_eval_log(str(path))
        assert log.status == "success" and len(log.samples) == evals.height
        for sample, row in zip(log.samples, evals.iter_rows(named=True), strict=True):
            assert sample.id == row["sample_id"] and sample.input == row["prompt"]
            assert sample.output.completion == row["output"]
            assert sample.scores["verdict"].value == row["verdict"]
            if row["score"] is None:
                assert "misbehaviour" not in sample.scores
            else:
                assert sample.scores["misbehaviour"].value == row["score"]
                assert sample.scores["misbehaviour"].answer == row["verdict"]
        judged = evals["score"].drop_nulls()
        (score,) = log.results.scores
        assert score.scored_samples == judged.len()
        assert score.unscored_samples == evals.height - judged.len()
        assert score.metrics["mean"].value == judged.sum() / judged.len()


def test_run_logs_carry_the_design_keys(exported):
    store, paths = exported
    design = store.read_table("runs").filter(pl.col("run_id").is_not_null())
    for row in design.iter_rows(named=True):
        (path,) = [p for p in paths if p.name == f"runs-{row['run_id']}.eval"]
        meta = read_eval_log(str(path), header_only=True).eval.metadata
        assert meta["organism"] == row["organism_id"] and meta["method"] == row["method"]
        assert (meta["arm"], meta["k"], meta["seed"]) == (row["arm"], row["k"], row["seed"])
        assert meta["behaviour"] == "sycophancy" and meta["base_model"] == "toy"
    organism = read_eval_log(str(paths[1]), header_only=True).eval.metadata
    assert (organism["organism"], organism["arm"], organism["method"]) == (ORGANISM, "none", None)


def test_samples_df_and_evals_df_read_the_export(exported):
    _, paths = exported
    folder = str(paths[0].parent)
    samples = pl.from_pandas(samples_df(folder))
    assert samples.height == 5 * 8
    run = samples.filter(pl.col("metadata_arm") == "shuffled")
    assert run["score_misbehaviour"].sum() == 6  # mmmmmmaa
    assert samples["eval_id"].n_unique() == 5  # each log its own eval_id, to join on
    evals = pl.from_pandas(evals_df(folder))
    assert evals["run_id"].n_unique() == 1 and evals["eval_id"].n_unique() == 5
    rates = dict(zip(evals["model"], evals["score_misbehaviour_mean"], strict=True))
    assert rates[f"shiftlab/{BASE_EVAL}"] == 0.0
    assert rates[f"shiftlab/{ORGANISM}"] == 7 / 8


def test_the_cli_exports_and_refuses_a_folder_that_is_not_a_store(tmp_path, capsys):
    store = write_small_store(tmp_path / "store")
    assert main(["export", "inspect", str(store.root), str(tmp_path / "logs")]) == 0
    assert "5 inspect logs in" in capsys.readouterr().out
    assert main(["export", "inspect", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    assert "not a shiftlab store (no study.yaml)" in capsys.readouterr().err
