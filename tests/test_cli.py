import os
import subprocess
import sys
from pathlib import Path

import pytest

from shiftlab.cli import main

GOOD = """
base_models: [{name: toy, path: toyworld:small}]
behaviours: [{name: sycophancy, toyworld: {n_eval: 8, n_induction: 32}, induction: {steps: 2}}]
organisms: {seeds: [0]}
"""


def run_cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    ("spec_text", "expected"),
    [
        (None, "no such spec file"),
        ("behaviours: [\n", "malformed YAML"),
        (GOOD.replace("sycophancy", "flattery"), "behaviours[0].name: must be one of"),
        (GOOD.replace("toyworld:small", "/no/such/model"), "base_models[0].path: no such folder"),
        (
            GOOD.replace("steps: 2", "steps: -3"),
            "behaviours[0].induction.steps: must be a positive integer, got -3",
        ),
        (GOOD.replace("name: toy", "name: a..b"), "base_models[0].name: must be letters"),
        (
            GOOD.replace("steps: 2", "steps: 1000000000000"),
            "spec.yaml: the study would train on about 3.2e+13 sequences",
        ),
    ],
)
def test_bad_specs_exit_2_with_one_line(tmp_path, capsys, spec_text, expected):
    spec = tmp_path / "spec.yaml"
    if spec_text is not None:
        spec.write_text(spec_text)
    for command in (["validate", str(spec)], ["run", str(spec), "--store", str(tmp_path / "s")]):
        code, _out, err = run_cli(command, capsys)
        assert code == 2
        assert err.startswith("shiftlab: error: ") and expected in err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_malformed_jsonl_names_file_and_line(tmp_path, capsys):
    suite = tmp_path / "suite"
    suite.mkdir()
    row = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    for name in ("induction", "consistency", "act_bct_clean", "act_bct_wrapped", "eval"):
        (suite / f"{name}.jsonl").write_text(row + "\n")
    (suite / "consistency.jsonl").write_text(row + "\n" + row[:-5] + "\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD.replace("toyworld: {n_eval: 8, n_induction: 32}", "source: suite"))
    code, _, err = run_cli(["run", str(spec), "--store", str(tmp_path / "store")], capsys)
    assert code == 2
    assert f"{suite / 'consistency.jsonl'}:2: malformed JSON" in err
    assert not list((tmp_path / "store").glob("organisms/*"))


def test_a_study_above_the_size_ceiling_passes_with_force(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD.replace("steps: 2", "steps: 1000000000000"))
    code, out, err = run_cli(["validate", str(spec), "--force"], capsys)
    assert code == 0 and "ok (" in out, err


def _chat_suite(folder: Path, eval_text: str) -> None:
    row = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    folder.mkdir()
    for name in ("induction", "consistency", "act_bct_clean", "act_bct_wrapped"):
        (folder / f"{name}.jsonl").write_text(row + "\n")
    (folder / "eval.jsonl").write_text(eval_text, encoding="utf-8")


def test_an_empty_eval_file_is_refused_by_validate(tmp_path, capsys):
    _chat_suite(tmp_path / "sycophancy", "\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD.replace("toyworld: {n_eval: 8, n_induction: 32}", "source: sycophancy"))
    code, _, err = run_cli(["validate", str(spec)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{tmp_path / 'sycophancy' / 'eval.jsonl'}: no rows" in err


def test_a_byte_order_mark_is_accepted(tmp_path, capsys):
    row = '{"messages": [{"role": "user", "content": "q"}], "answer": "A"}'
    _chat_suite(tmp_path / "sycophancy", "\ufeff" + row + "\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD.replace("toyworld: {n_eval: 8, n_induction: 32}", "source: sycophancy"))
    code, _, err = run_cli(["validate", str(spec)], capsys)
    assert "malformed" not in err and "UTF-8" not in err
    assert code == 0, err


def test_unwritable_store(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD)
    (tmp_path / "occupied").write_text("a file, not a folder")
    code, _, err = run_cli(["run", str(spec), "--store", str(tmp_path / "occupied")], capsys)
    assert code == 2 and "is a file" in err
    code, _, err = run_cli(["run", str(spec)], capsys)
    assert code == 2 and "store: is required" in err


def test_debug_shows_the_traceback(tmp_path):
    from shiftlab.errors import SpecError

    with pytest.raises(SpecError):
        main(["--debug", "validate", str(tmp_path / "missing.yaml")])


def test_validate_run_and_status(tmp_path, capsys, toy_model_dir):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD + "store: out\n")
    code, out, _ = run_cli(["validate", str(spec)], capsys)
    assert code == 0 and "ok (1 base models, 1 behaviours, 1 seeds" in out
    code, out, _ = run_cli(["run", str(spec), "--no-progress"], capsys)
    assert code == 0 and "sycophancy" in out
    code, out, _ = run_cli(["status", str(tmp_path / "out")], capsys)
    assert code == 0
    assert "base_evals: 1/1 finished" in out and "organisms: 1/1 finished" in out
    code, _, err = run_cli(["status", str(tmp_path)], capsys)
    assert code == 2 and "not a shiftlab store" in err


def test_console_script_runs(tmp_path):
    exe = Path(sys.executable).with_name("shiftlab")
    result = subprocess.run(
        [str(exe), "validate", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
        env={**os.environ},
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().endswith("none.yaml: no such spec file")


def test_the_paper_scale_grid_is_paper_sized():
    import yaml

    from shiftlab.cli import _demo_spec_text
    from shiftlab.spec import METHODS, parse_spec
    from shiftlab.study import load_suites, plan_phase1, plan_pools

    spec = parse_spec(yaml.safe_load(_demo_spec_text("paper")), "paper.yaml")
    organisms = [j for j in plan_phase1(spec, load_suites(spec)) if j.kind == "organisms"]
    assert len(organisms) == 108
    assert {m.name for m in spec.methods} == set(METHODS)
    assert len(plan_pools(spec, organisms)) == 108 * 7  # bct and act train on pairs, no pool


@pytest.mark.parametrize("workers", ["0", "two", "-1"])
def test_workers_must_be_a_positive_integer_or_auto(workers, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "spec.yaml", "--workers", workers])
    assert exit_info.value.code == 2
    assert f"expected a positive integer or 'auto', got {workers!r}" in capsys.readouterr().err
