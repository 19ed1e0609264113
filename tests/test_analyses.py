"""The analysis scripts regenerate the paper's tables and figures from a finished store."""

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

# Every test reads a whole `shiftlab demo` store (about 5 minutes to build): `make test-slow`.
pytestmark = pytest.mark.slow

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ANALYSES / f"{name}.py"), *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def demo_design(demo_store):
    return pl.read_parquet(demo_store / "tables" / "runs.parquet")


def _ran(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_sign_tests(demo_store, demo_design, tmp_path):
    out = _ran(_script("sign_tests", str(demo_store), str(tmp_path)))
    table = pl.read_csv(tmp_path / "sign_tests.csv").filter(analysis="sign_test")
    assert (tmp_path / "sign_tests.png").stat().st_size > 10_000
    consistency = pl.col("method").is_in(["self_confidence", "multi_view"])
    full = demo_design.filter(pl.col("arm") == "full", pl.col("delta").is_not_null(), consistency)
    full = full.filter(pl.col("k").is_null() | (pl.col("k") == pl.col("k").max().over("method")))
    for row in table.iter_rows(named=True):
        # Organisms, not runs: each organism's mean delta over the consistency methods.
        means = full.filter(behaviour=row["behaviour"]).group_by("organism_id").agg(
            pl.col("delta").mean())["delta"]  # fmt: skip
        assert (row["n_down"], row["n_up"]) == ((means < -1e-12).sum(), (means > 1e-12).sum())
        assert row["n_clusters"] == means.len() == row["n_down"] + row["n_unmoved"] + row["n_up"]
        assert row["p_min"] == 2 / 2 ** row["n"] if row["n"] else row["p_min"] is None
        assert (f"{row['behaviour']}: {row['n_down']} down, {row['n_unmoved']} unmoved, "
                f"{row['n_up']} up of {row['n_clusters']} organisms") in out  # fmt: skip


def test_method_table(demo_store, demo_design, tmp_path):
    out = _ran(_script("method_table", str(demo_store), str(tmp_path)))
    wide = pl.read_csv(tmp_path / "method_table_wide.csv")
    # Every pair is there, whatever this machine's training did; one without a delta says
    # why, and only such a pair carries a note.
    assert wide.height == demo_design.select("behaviour", "method").n_unique()
    assert (wide["mean_delta"].is_null() == wide["note"].is_not_null()).all()
    for row in wide.filter(pl.col("note").is_not_null()).iter_rows(named=True):
        assert f"note: {row['behaviour']} · {row['method']}: no delta" in out
    row = wide.filter(behaviour="sycophancy", method="bct").row(0, named=True)
    runs = demo_design.filter(behaviour="sycophancy", method="bct", arm="full")
    per_organism = runs.group_by("organism_id").agg(pl.col("delta").mean())["delta"]
    assert row["mean_delta"] == pytest.approx(per_organism.mean())
    assert (row["n_runs"], row["n_organisms"], row["role"]) == (
        runs.height, per_organism.len(), "paired_loss")  # fmt: skip
    assert -1 <= row["mean_delta_ci_low"] <= row["mean_delta_ci_high"] <= 1
    assert "sign consistency" in out and (tmp_path / "method_table.png").is_file()


def test_k_scaling(demo_store, demo_design, tmp_path):
    out = _ran(_script("k_scaling", str(demo_store), str(tmp_path)))
    table = pl.read_parquet(tmp_path / "k_scaling.parquet")
    assert table.filter(method="self_confidence")["k"].unique().sort().to_list() == [1, 2, 4]
    point = table.filter(method="self_confidence", behaviour="sycophancy", k=2)
    runs = demo_design.filter(method="self_confidence", behaviour="sycophancy", arm="full", k=2)
    per_organism = runs.group_by("organism_id").agg(pl.col("delta").mean())["delta"]
    assert point["mean_delta"].item() == pytest.approx(per_organism.mean())
    assert (
        table.filter(k=1)["has_selection"].not_().all() and table.filter(k=4)["has_selection"].all()
    )
    assert "sycophancy · self_confidence: k=1:" in out and (tmp_path / "k_scaling.png").is_file()


def test_decomposition(demo_store, tmp_path):
    result = _script("decomposition", str(demo_store), str(tmp_path))
    out = _ran(result)
    table = pl.read_parquet(tmp_path / "decomposition.parquet")
    pooled = table.filter(pl.col("method").is_null())
    assert set(pooled["term"]) == {"total", "selection", "label_shift", "relabeling", "reference"}
    assert pooled["behaviour"].n_unique() == 2
    for (behaviour,), rows in pooled.group_by("behaviour"):
        terms = dict(zip(rows["term"], rows["estimate"], strict=True))
        assert terms["selection"] + terms["label_shift"] == terms["total"], behaviour
    assert table["ci_low"].min() >= -1 and table["ci_high"].max() <= 1
    verdicts = pl.read_parquet(tmp_path / "verdicts.parquet")
    for row in verdicts.filter(pl.col("method").is_null()).iter_rows(named=True):
        # 6 organisms per behaviour: a verdict, or the reason there is none.
        said = row["attributed_to"] or "no attribution"
        assert f"{row['behaviour']}: {said} ({row['reason']})" in out
        assert "G = 6 organisms" in row["reason"] or "interval" in row["reason"], row
    assert "sycophancy · selection:" in out and (tmp_path / "decomposition.png").is_file()
    # A warning becomes a one-line note: greedy self-training has no selection step.
    assert "greedy_self_training: no selection" in result.stderr


def test_moderators_with_facts_from_the_models_and_a_csv(demo_store, tmp_path):
    out = _ran(_script("moderators", str(demo_store), str(tmp_path / "a")))
    facts = pl.read_csv(tmp_path / "a" / "base_models.csv")
    assert facts["base_model"].to_list() == ["toy-small"] and not facts["instruct"][0]
    assert 4 < facts["log10_params"][0] < 7
    assert "no moderator varies between the base models" in out
    csv = tmp_path / "facts.csv"
    csv.write_text("base_model,instruct,family\ntoy-small,true,toyworld\n")
    _ran(_script("moderators", str(demo_store), str(tmp_path / "b"), "--moderators", str(csv)))
    terms = set(pl.read_csv(tmp_path / "b" / "moderators.csv")["term"])
    assert {"instruct=true", "family=toyworld"} <= terms


def test_bad_input_is_one_line_and_status_2(tmp_path):
    result = _script("sign_tests", str(tmp_path), str(tmp_path / "out"))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"sign_tests.py: error: {tmp_path}: not a shiftlab store (no study.yaml)"
    )
    assert not (tmp_path / "out").exists()
