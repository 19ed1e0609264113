"""The paper's descriptive tables keep every behaviour x method pair."""

import polars as pl

from shiftlab.attribution import method_table, simulate_runs


def test_a_pair_without_any_delta_stays_in_the_method_table_with_its_reason():
    runs = simulate_runs(selection_effect=-0.2, seed=3)
    behaviour, method = runs.select("behaviour", "method").row(0)
    blank = (pl.col("behaviour") == behaviour) & (pl.col("method") == method)
    runs = runs.with_columns(pl.when(blank).then(None).otherwise(pl.col("delta")).alias("delta"))
    table = method_table(runs)
    pairs = runs.filter(arm="full").select("behaviour", "method").unique()
    assert table.select("behaviour", "method").unique().height == pairs.height
    empty = table.filter(behaviour=behaviour, method=method)
    assert set(empty["term"]) == {"mean_delta", "share_down"}
    assert empty["estimate"].is_null().all() and empty["note"].str.starts_with("no delta").all()
    assert table.filter(~blank)["note"].is_null().all()
