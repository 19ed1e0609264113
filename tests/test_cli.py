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


# One label method on the toyworld organism, two arms: a run per seed.
RUN_METHOD = """
methods: [{name: greedy_self_training}]
arms: [full, none]
runs: {seeds: [0], training: {steps: 2, batch_size: 4}}
eval: {max_new_tokens: 6}
shift: {n_permutations: 20}
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
    assert code == 0 and "ok (1 base model, 1 behaviour, 1 seed, 0 methods, 5 arms)" in out
    code, out, _ = run_cli(["run", str(spec), "--no-progress"], capsys)
    assert code == 0 and "sycophancy" in out
    code, out, _ = run_cli(["status", str(tmp_path / "out")], capsys)
    assert code == 0
    assert "base_evals: 1/1 finished" in out and "organisms: 1/1 finished" in out
    code, _, err = run_cli(["status", str(tmp_path)], capsys)
    assert code == 2 and "not a shiftlab store" in err


def test_set_overrides_are_validated_recorded_and_status_exits_1_while_work_is_left(
    tmp_path, capsys, toy_model_dir, monkeypatch
):
    import json

    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install '.[mlflow]')")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)

    import yaml

    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD + RUN_METHOD)
    sets = [
        "--set",
        "behaviours.0.toyworld.n_eval=6",
        "--set",
        "runs.seeds=[0, 1]",
        "--set",
        "tracking.kind=mlflow",
        "--set",
        f"tracking.uri={tmp_path / 'mlruns'}",
    ]
    code, out, _ = run_cli(["validate", str(spec), *sets], capsys)
    assert code == 0 and "(1 base model, 1 behaviour, 1 seed, 1 method, 2 arms)" in out
    store = tmp_path / "store"
    code, out, err = run_cli(["run", str(spec), "--store", str(store), "--no-progress",
                              "--workers", "1", *sets], capsys)  # fmt: skip
    assert code == 0, err
    assert out.strip().splitlines()[-1] == f"next: shiftlab report {store}"
    recorded = yaml.safe_load((store / "study.yaml").read_text())
    assert recorded["behaviours"][0]["toyworld"]["n_eval"] == 6
    assert recorded["runs"]["seeds"] == [0, 1]
    assert "tracking" not in recorded  # who watches a study is not part of what it is
    # run_study tracked itself (MLflow, a file store, asked for with --set).
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=str(tmp_path / "mlruns"))
    (experiment,) = [e for e in client.search_experiments() if e.name == "study"]
    names = sorted(r.info.run_name for r in client.search_runs([experiment.experiment_id]))
    assert "study-attribution" in names and len(names) == 3
    code, out, _ = run_cli(["status", str(store), "--json"], capsys)
    status = json.loads(out)
    assert code == 0 and status["finished"] and status["stages"]["runs"]["total"] == 2
    # A run deleted: work is left, and status says so with exit 1.
    run_id = sorted(p.name for p in (store / "runs").iterdir() if not p.name.startswith("."))[0]
    (store / "runs" / run_id / "manifest.json").unlink()
    code, out, _ = run_cli(["status", str(store), "--json"], capsys)
    assert code == 1 and json.loads(out)["stages"]["runs"]["left"] == [run_id]
    code, out, _ = run_cli(["status", str(store)], capsys)
    assert code == 1 and f"  left: {run_id}" in out and "runs: 1/2 finished" in out


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("runs.training.steps=-1", "runs.training.steps: must be a positive integer, got -1"),
        ("runs.trainin.steps=3", "runs.trainin"),
        (
            "behaviours.3.name=x",
            "--set 'behaviours.3.name=x': behaviours.3: no item 3 in a list of 1",
        ),
        ("organisms.seeds.0.x=1", "organisms.seeds.0 is a value, not a mapping"),
        ("seed", "expected path.to.field=VALUE"),
    ],
)
def test_a_bad_override_is_one_line_and_exit_2(tmp_path, capsys, override, expected):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD)
    commands = (["validate", str(spec)], ["run", str(spec), "--store", str(tmp_path / "s")])
    for command in commands:
        code, _, err = run_cli([*command, "--set", override], capsys)
        assert code == 2 and expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "s").exists()


def test_version_and_every_command_has_a_description_and_an_example(capsys):
    import argparse

    from shiftlab.cli import _parser

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == "shiftlab 0.1.0"

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield f"{path}{name}", sub
                    yield from walk(sub, f"{path}{name} ")

    commands = dict(walk(_parser(), ""))
    assert {"run", "validate", "status", "export inspect", "compare", "repro check"} <= set(
        commands
    )
    for name, sub in commands.items():
        text = sub.format_help()
        description = sub.description or ""
        assert description and "\n" not in description and description.endswith("."), name
        assert f"example:\n  shiftlab {name}" in text, name


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


# A finished study rerun, and its report asked for again: nothing is left to build, so the
# command must not load torch (checked in a fresh interpreter: this one has it already).
WARM = """
import sys
from shiftlab.cli import main
code = main(sys.argv[1:])
assert code == 0, code
assert "torch" not in sys.modules, "the warm path imported torch"
"""


def test_a_finished_study_reruns_and_reports_without_torch(tmp_path, capsys, toy_model_dir):
    spec, store = tmp_path / "spec.yaml", tmp_path / "store"
    spec.write_text(GOOD + RUN_METHOD)
    assert main(["run", str(spec), "--store", str(store), "--no-progress", "--workers", "1"]) == 0
    assert main(["report", str(store), "--n-boot", "50"]) == 0
    cold = capsys.readouterr().out
    stamps = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    for args in (["run", str(spec), "--store", str(store), "--no-progress"],
                 ["report", str(store), "--n-boot", "50"]):  # fmt: skip
        result = subprocess.run([sys.executable, "-c", WARM, *args], capture_output=True,
                                text=True, cwd=os.getcwd(), check=False)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1].startswith(("next: shiftlab report", "report: "))
        assert "mean delta" in result.stdout or "report.html" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()} == stamps
    assert "greedy_self_training" in cold


def test_a_missing_executor_is_an_error_on_a_finished_study_too(
    tmp_path, capsys, toy_model_dir, monkeypatch
):
    import shiftlab.executors as executors

    spec, store = tmp_path / "spec.yaml", tmp_path / "store"
    spec.write_text(GOOD)
    assert main(["run", str(spec), "--store", str(store), "--no-progress", "--workers", "1"]) == 0
    monkeypatch.setitem(executors._EXTRAS, "submitit", ("no_such_engine", "submitit"))
    capsys.readouterr()
    code = main(["run", str(spec), "--store", str(store), "--executor", "submitit"])
    assert code == 2
    assert "executor 'submitit' needs no_such_engine" in capsys.readouterr().err
