import polars as pl
import pytest

from shiftlab.cli import main


@pytest.mark.slow
def test_demo_induces_every_behaviour_and_reruns_as_a_no_op(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    table = pl.read_parquet(tmp_path / "tables" / "organisms.parquet")
    assert table.height == 8 and set(table["seed"]) == {0, 1}
    for row in table.iter_rows(named=True):
        assert row["ci_low"] > row["base_ci_high"], row
    capsys.readouterr()
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "emergent_misalignment" in capsys.readouterr().out
