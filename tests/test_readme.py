"""The README's Python code blocks run as written, on a small store: a tiny toyworld
study for the API block, a simulated design table (27 organisms) for the attribution
block."""

import re
from pathlib import Path

import pytest
import yaml

from shiftlab.attribution import simulate_runs
from shiftlab.spec import parse_spec
from shiftlab.store import Store
from spec_helpers import TINY_STUDY

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.S | re.M)
# The one-organism study of the API block: one method, two arms, a few steps.
STUDY = {
    **TINY_STUDY,
    "behaviours": [{"name": "sycophancy", "toyworld": {"n_induction": 32, "n_consistency": 6,
                                                        "n_pairs": 4, "n_eval": 8},
                    "induction": {"steps": 4}}],
    "methods": [{"name": "self_confidence", "n_candidates": 2, "k_values": []}],
    "arms": ["full", "shuffled", "none"],
    "runs": {"seeds": [0], "training": {"steps": 2, "batch_size": 4}},
    "eval": {"max_new_tokens": 6},
    "shift": {"n_permutations": 20},
}  # fmt: skip


@pytest.fixture()
def workdir(tmp_path, monkeypatch, toy_model_dir):
    """A folder with what the blocks name: study.yaml and a finished runs/demo store."""
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(STUDY))
    demo = Store.open(tmp_path / "runs" / "demo")
    demo.write_study(parse_spec(TINY_STUDY).to_yaml(), {"study": 0})
    demo.write_table("runs", simulate_runs(selection_effect=-0.2, shift_effect=0.1, seed=0))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_the_blocks_it_promises():
    assert len(BLOCKS) >= 4
    assert any("shiftlab.run_study(" in b and "shiftlab.open_store(" in b for b in BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: BLOCKS[i].split("\n")[0])
def test_a_readme_block_runs_as_written(workdir, index):
    namespace: dict = {"__name__": "readme"}
    exec(compile(BLOCKS[index], f"README.md block {index + 1}", "exec"), namespace)
    if "design" in namespace:  # the API block: a real study, and pandas into attribution
        assert namespace["design"].height == 3
        assert set(namespace["parts"]["term"]) >= {"total"}
        assert (workdir / "runs" / "study" / "study.yaml").is_file()
    if "mediation" in namespace and "runs" in namespace:
        assert namespace["runs"].height == 270
