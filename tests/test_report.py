"""The study report from a store's design table."""

import errno
import re

import polars as pl
import pytest

from shiftlab.attribution import simulate_runs
from shiftlab.cli import main
from shiftlab.report import headlines, write_report
from shiftlab.store import Store


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    store = Store.open(tmp_path_factory.mktemp("store"))
    runs = simulate_runs(selection_effect=-0.2, reference_effect=-0.3, behaviours=("syc", "rh"),
                         methods=("self_confidence", "multi_view", "greedy_self_training",
                                  "bct"), seed=0)  # fmt: skip
    store.write_table("runs", runs)
    return store, write_report(store, n_boot=300)


def test_report_files_tables_and_figures(reported):
    store, page = reported
    text = page.read_text()
    assert page == store.root / "report.html" and (store.root / "report.md").is_file()
    assert text.count("data:image/png;base64,") >= 5  # self-contained
    for name in ("sign_tests", "decomposition", "verdicts", "method_table", "mediation",
                 "arm_effects"):  # fmt: skip
        frame = pl.read_parquet(store.root / "attribution" / f"{name}.parquet")
        assert frame.height > 0, name
    for name in ("decomposition", "forest", "delta_heatmap", "shift_vs_delta", "sign_tests"):
        assert (store.root / "figures" / f"{name}.svg").stat().st_size > 1000
    assert "eta: not computed: no pool carries selection scores" in text
    assert "organisms: not shown: the store has no tables/organisms.parquet" in text
    assert "greedy_self_training: no selection (full and shuffled train on the same labels)" in text
    assert "Sign convention: Δ is a run&#x27;s behaviour rate minus its organism&#x27;s" in text


def test_no_interval_leaves_the_range_and_no_p_is_zero(reported):
    store, _ = reported
    for path in (store.root / "attribution").glob("*.parquet"):
        frame = pl.read_parquet(path)
        if "ci_low" in frame.columns and path.stem != "mediation":
            assert frame["ci_low"].min() >= -1 and frame["ci_high"].max() <= 1, path.stem
        for column in ("p_value", "p_adjusted"):
            if column in frame.columns:
                assert (frame[column].drop_nulls() > 0).all(), path.stem
    text = (store.root / "report.md").read_text()
    assert not re.search(r"p = 0(\.0*)?[;)\s]", text)


def test_headlines_follow_the_numbers(reported):
    store, _ = reported
    tables = {n: pl.read_parquet(store.root / "attribution" / f"{n}.parquet")
              for n in ("sign_tests", "decomposition", "verdicts")}  # fmt: skip
    sentences = headlines(tables)
    assert set(sentences) == {"syc", "rh"}
    pooled = (
        tables["verdicts"].filter(pl.col("method").is_null(), behaviour="syc").row(0, named=True)
    )
    assert sentences["syc"].startswith(
        f"consistency training (multi_view, self_confidence; G = 27 organisms): of the "
        f"{pooled['total']:+.2f} [{pooled['total_ci_low']:+.2f}, {pooled['total_ci_high']:+.2f}] "
        "change, selection"
    )
    assert "the change is attributable to selection" in sentences["syc"]
    signs = tables["sign_tests"].filter(analysis="sign_test", behaviour="syc").row(0, named=True)
    assert f"went down in {signs['n_down']}, stayed in {signs['n_unmoved']}" in sentences["syc"]


def test_few_organisms_give_no_verdict_and_say_why(tmp_path):
    store = Store.open(tmp_path / "store")
    store.write_table("runs", simulate_runs(selection_effect=-0.3, n_bases=1,
                                            organisms_per_base=2, seed=1))  # fmt: skip
    page = write_report(store, out=tmp_path / "elsewhere", n_boot=200)
    assert page == tmp_path / "elsewhere" / "report.html"
    assert not (store.root / "report.html").exists()  # the store is only read
    text = page.read_text()
    assert "no attribution: G = 2 organisms; at least 6 are needed" in text
    assert "the smallest p 2 organisms allow is 0.5" in text
    assert "no behaviour could be estimated (sycophancy: G = 2 organisms; at least 6 are" in text


def test_report_command(reported, tmp_path, capsys):
    store, _ = reported
    out = tmp_path / "out"
    assert main(["report", str(store.root), "--n-boot", "200", "--out", str(out),
                 "--min-organisms", "30"]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip().endswith(str(out / "report.html"))
    assert "no attribution: G = 27 organisms; at least 30 are needed" in (
        out / "report.html").read_text()  # fmt: skip
    assert main(["report", str(tmp_path)]) == 2
    assert "not a shiftlab store" in capsys.readouterr().err


def test_a_full_disk_while_drawing_is_one_line_and_leaves_no_temporary(
    reported, tmp_path, capsys, monkeypatch
):
    store, _ = reported
    out = tmp_path / "out"

    def full_disk(figure, suffix, path):
        path.write_bytes(b"half a figure")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("shiftlab.report._save_figure", full_disk)
    code = main(["report", str(store.root), "--n-boot", "50", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert re.match(rf"shiftlab: error: {re.escape(str(out / 'figures'))}/\w+\.png: no space "
                    r"left on the device \(.+ free on /", err), err  # fmt: skip
    assert list((out / "figures").iterdir()) == [] and not (out / "report.html").exists()


def test_a_report_sweeps_what_a_killed_report_left(reported, tmp_path):
    store, _ = reported
    out = tmp_path / "out"
    left = [out / "figures" / ".tmp-forest.png-0123abcd",
            out / "attribution" / ".tmp-verdicts.parquet-89abcdef",
            out / ".tmp-report.html-00ff00ff", out / ".tmp-.report.json-0a0b0c0d"]  # fmt: skip
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    write_report(store, out=out, n_boot=50)
    assert not any(path.exists() for path in left)
    assert not list(out.rglob(".tmp-*")) and not list(out.glob(".*.lease"))


@pytest.mark.slow  # reads a whole `shiftlab demo` store (minutes to build)
def test_the_demo_report_follows_the_rules(demo_store):
    """`shiftlab demo` writes the report: headlines over the demo's 6 organisms per
    behaviour that attribute the change or say exactly why not, no p of 0, no interval of
    a rate difference outside [-1, 1]."""
    text = (demo_store / "report.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("- **")]
    assert len(lines) == 2
    for line in lines:
        assert "of the " in line and "selection " in line and "label shift " in line
        assert "G = 6 organisms" in line and "at least 6 are needed" not in line
        assert "the change is attributable to " in line or "no attribution: " in line
    assert not re.search(r"p = 0(\.0*)?[;)\s]", text)
    for path in (demo_store / "attribution").glob("*.parquet"):
        frame = pl.read_parquet(path)
        for column in ("p_value", "p_adjusted", "p_min"):
            if column in frame.columns:
                assert (frame[column].drop_nulls() > 0).all(), (path.stem, column)
        if "term" in frame.columns:
            # Differences of rates lie in [-1, 1]; a proportion mediated is a ratio of two
            # of them, with no such bound (above 1 when the direct path has the other sign).
            frame = frame.filter(pl.col("term") != "proportion_mediated")
        if "ci_low" in frame.columns:
            assert frame["ci_low"].drop_nulls().min() >= -1, path.stem
            assert frame["ci_high"].drop_nulls().max() <= 1, path.stem
    mediated = pl.read_parquet(demo_store / "attribution" / "mediation.parquet")
    for row in mediated.filter(term="proportion_mediated").iter_rows(named=True):
        total = mediated.filter(behaviour=row["behaviour"], term="total").row(0, named=True)
        assert total["ci_low"] > 0 or total["ci_high"] < 0, total  # only for a clear total
    verdicts = pl.read_parquet(demo_store / "attribution" / "verdicts.parquet")
    assert (verdicts["n_organisms"] == 6).all()
    # A verdict only where the total and the part it names exclude 0.
    for row in verdicts.filter(pl.col("attributed_to").is_not_null()).iter_rows(named=True):
        assert row["total_ci_low"] > 0 or row["total_ci_high"] < 0, row


def test_a_suppression_with_a_capability_loss_is_said_and_its_runs_flagged(tmp_path):
    store = Store.open(tmp_path / "store")
    runs = simulate_runs(selection_effect=-0.3, capability_effect=-0.2, seed=2)
    store.write_table("runs", runs)
    write_report(store, n_boot=200)
    beside = pl.read_parquet(store.root / "attribution" / "capability_beside_behaviour.parquet")
    total = beside.filter(pl.col("method").is_null(), term="total").row(0, named=True)
    assert total["behaviour_change"] < 0 and total["capability_change_ci_high"] < 0
    # Paired within organism like the behaviour: the same organisms carry both.
    assert total["behaviour_change_organisms"] == total["capability_change_organisms"] == 27
    text = (store.root / "report.md").read_text()
    assert "the suppression came with a capability change of" in text
    assert "(its interval excludes 0)" in text
    fell = pl.read_parquet(store.root / "attribution" / "runs_where_both_fell.parquet")
    flagged = runs.filter(pl.col("delta") < 0, "capability_fell")
    assert fell.height == flagged.height > 0
    assert "lowered the behaviour while capability fell" in text


def test_no_capability_clause_when_capability_held(tmp_path):
    store = Store.open(tmp_path / "store")
    store.write_table("runs", simulate_runs(selection_effect=-0.3, capability_effect=0.2, seed=2))
    write_report(store, n_boot=200)
    text = (store.root / "report.md").read_text()
    assert "capability_decomposition" in text or "capability decomposition" in text
    assert "the suppression came with a capability change" not in text
    assert not (store.root / "attribution" / "runs_where_both_fell.parquet").exists()


def test_a_design_table_without_capability_says_why(tmp_path):
    store = Store.open(tmp_path / "store")
    runs = simulate_runs(selection_effect=-0.3, seed=2)
    store.write_table("runs", runs.drop(pl.selectors.starts_with("capability_")))
    text = write_report(store, n_boot=200).read_text()
    assert (
        "capability_decomposition: not computed: the design table has no capability_delta" in text
    )


def test_the_report_says_which_rate_the_deltas_use_and_what_original_trained_on(tmp_path):
    store = Store.open(tmp_path)
    runs = simulate_runs(reference_effect=-0.3, behaviours=("syc",), methods=("self_confidence",),
                         seed=0)  # fmt: skip
    store.write_table("runs", runs)
    organisms = runs.select("organism_id", "behaviour").unique(maintain_order=True)
    store.write_table("organisms", organisms.with_columns(
        rate_definition=pl.lit("sampled x4"), references=pl.lit("dataset responses")))  # fmt: skip
    text = write_report(store, n_boot=50).read_text()
    assert "are over 4 temperature-1 samples per eval prompt" in text
    assert "original: the original arm trained on the suites&#x27; references: syc: dataset" in text


def _stamps(folder):
    """Each report file's modification time and bytes (the tables are the inputs)."""
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*")
            if p.is_file() and p.parent.name != "tables"}  # fmt: skip


def test_a_report_is_rebuilt_only_when_its_inputs_changed(tmp_path, monkeypatch):
    import shiftlab.report as report

    store = Store.open(tmp_path / "store")
    runs = simulate_runs(selection_effect=-0.2, n_bases=2, organisms_per_base=3, seed=0)
    store.write_table("runs", runs)
    page = write_report(store, n_boot=50)
    before = _stamps(store.root)
    analyses = report.attribution_tables

    def refuse(*args, **kwargs):
        raise AssertionError("the report's inputs did not change")

    monkeypatch.setattr(report, "attribution_tables", refuse)
    assert write_report(store, n_boot=50) == page
    store.write_table("runs", runs)  # the same table written again is the same input
    assert write_report(store, n_boot=50) == page
    assert _stamps(store.root) == before
    monkeypatch.setattr(report, "attribution_tables", analyses)

    def rebuilt(change) -> bool:
        mtime = page.stat().st_mtime_ns
        change()
        write_report(store, n_boot=50)
        return page.stat().st_mtime_ns != mtime

    record = store.root / ".report.json"
    assert rebuilt(lambda: store.write_table("runs", runs.with_columns(delta=pl.col("delta") / 2)))
    assert rebuilt(lambda: record.write_text(record.read_text()[:40]))  # a damaged record
    assert rebuilt(lambda: (store.root / "figures" / "forest.svg").unlink())  # a lost output
    assert (store.root / "figures" / "forest.svg").is_file()
    assert rebuilt(lambda: write_report(store, n_boot=60))  # other parameters
    assert not rebuilt(lambda: None)
