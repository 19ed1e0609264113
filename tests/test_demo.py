import polars as pl
import pytest

from shiftlab.cli import main


@pytest.mark.slow
def test_demo_induces_every_behaviour_and_reruns_as_a_no_op(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    table = pl.read_parquet(tmp_path / "tables" / "organisms.parquet")
    # Enough organisms for a verdict: 6 per behaviour (one base x 6 seeds).
    assert table.height == 12 and set(table["seed"]) == set(range(6))
    for row in table.iter_rows(named=True):
        assert row["ci_low"] > row["base_ci_high"], row
    # The headline rate is sampled, as the strength is: a fragile organism's greedy answer
    # is the aligned one.
    assert table["rate_definition"].str.contains("sampled").all(), table["rate_definition"]
    design = pl.read_parquet(tmp_path / "tables" / "runs.parquet")
    assert set(design["method"]) == {"self_confidence", "greedy_self_training", "bct"}
    assert set(design["arm"]) == {"full", "shuffled", "relabeled", "original", "none"}
    assert set(design["organism_seed"]) == set(range(6))
    assert set(design["behaviour"]) == {"sycophancy", "reward_hacking"}
    trained = design.filter(pl.col("n_train") > 0)
    assert trained["delta"].is_not_null().all()
    # The original arm trains on the suites' references, drawn like the induction data
    # (a dataset's responses), not on the aligned answers: it is no supervised correction.
    assert table["references"].str.starts_with("dataset responses").all()
    # The sycophancy rule reads agreement, so almost every demo output is judged.
    runs = design.filter(pl.col("n_train") > 0)
    assert runs["n_unparseable"].sum() < 0.05 * runs["n_eval"].sum()
    capsys.readouterr()
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "reward_hacking" in out and "mean delta" in out
