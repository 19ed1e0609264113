"""The study report from a store's design table."""

import polars as pl
import pytest

from shiftlab.attribution import simulate_runs
from shiftlab.cli import main
from shiftlab.report import headlines, write_report
from shiftlab.store import Store


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    store = Store.open(tmp_path_factory.mktemp("store"))
    runs = simulate_runs(selection_effect=-0.2, shift_effect=0.0, behaviours=("syc", "rh"), seed=0)
    store.write_table("runs", runs)
    return store, write_report(store, n_boot=300)


def test_report_files_tables_and_figures(reported):
    store, page = reported
    text = page.read_text()
    assert page == store.root / "report.html" and (store.root / "report.md").is_file()
    assert text.count("data:image/png;base64,") >= 4  # self-contained
    for name in ("sign_tests", "decomposition", "mediation", "arm_effects"):
        frame = pl.read_parquet(store.root / "attribution" / f"{name}.parquet")
        assert frame.height > 0 and "estimate" in frame.columns
    for name in ("decomposition", "forest", "delta_heatmap", "shift_vs_delta"):
        assert (store.root / "figures" / f"{name}.svg").stat().st_size > 1000
    assert "eta: not computed: no pool carries selection scores" in text


def test_headlines_come_from_the_numbers(reported):
    store, _ = reported
    tables = {n: pl.read_parquet(store.root / "attribution" / f"{n}.parquet")
              for n in ("sign_tests", "decomposition")}  # fmt: skip
    sentences = headlines(tables)
    assert set(sentences) == {"syc", "rh"}
    share = tables["sign_tests"].filter(analysis="sign_test", behaviour="syc")["estimate"].item()
    assert f"in {share:.0%} of the runs that moved" in sentences["syc"]
    assert "attributable to selection, not to the labelling shift" in sentences["syc"]


def test_report_command(reported, tmp_path, capsys):
    store, _ = reported
    assert main(["report", str(store.root), "--n-boot", "200"]) == 0
    assert capsys.readouterr().out.strip().endswith("report.html")
    assert main(["report", str(tmp_path)]) == 2
    assert "not a shiftlab store" in capsys.readouterr().err
