"""The additive decomposition: total = selection + label shift, comparators, roles."""

import polars as pl
import pytest

from shiftlab.attribution import decompose, simulate_runs
from shiftlab.errors import ShiftlabError

METHODS = ("self_confidence", "multi_view", "greedy_self_training", "rejection_sampling", "bct")


@pytest.fixture(scope="module")
def study():
    runs = simulate_runs(selection_effect=-0.15, shift_effect=0.05, relabeling_effect=0.1,
                         reference_effect=-0.3, methods=METHODS, n_seeds=2,
                         behaviours=("syc", "rh"), seed=3)  # fmt: skip
    with pytest.warns(UserWarning, match="greedy_self_training: no selection"):
        table = decompose(runs)
    return runs, table


def test_the_parts_add_up_exactly_on_every_row(study):
    _, table = study
    for (behaviour, method), group in table.group_by("behaviour", "method"):
        terms = dict(zip(group["term"], group["estimate"], strict=True))
        if "selection" in terms:
            assert terms["selection"] + terms["label_shift"] == terms["total"], (behaviour, method)
    assert (table["ci_low"] <= table["estimate"]).all()
    assert (table["estimate"] <= table["ci_high"]).all()
    assert table["ci_low"].min() >= -1 and table["ci_high"].max() <= 1


def test_each_term_is_the_mean_over_organisms_of_its_paired_difference(study):
    runs, table = study
    chosen = runs.filter(behaviour="syc", method="self_confidence")
    arms = (
        chosen.group_by("organism_id", "arm")
        .agg(pl.col("delta").mean())
        .pivot(on="arm", index="organism_id", values="delta")
    )
    row = table.filter(behaviour="syc", method="self_confidence")
    by_term = dict(zip(row["term"], row["estimate"], strict=True))
    assert by_term["selection"] == pytest.approx((arms["full"] - arms["shuffled"]).mean())
    assert by_term["label_shift"] == pytest.approx((arms["shuffled"] - arms["none"]).mean())
    assert by_term["total"] == pytest.approx((arms["full"] - arms["none"]).mean(), abs=1e-12)
    assert set(row["n_clusters"]) == {27}


def test_planted_effects_are_recovered(study):
    _, table = study
    pooled = table.filter(pl.col("method").is_null(), behaviour="syc")
    truth = {"total": -0.1, "selection": -0.15, "label_shift": 0.05, "relabeling": 0.1,
             "reference": -0.3}  # fmt: skip
    for row in pooled.iter_rows(named=True):
        assert abs(row["estimate"] - truth[row["term"]]) < 4 * row["se"], row
        assert row["p_min"] == pytest.approx(1e-4) and row["p_value"] >= row["p_min"]


def test_controls_and_paired_losses_have_rows_of_their_own(study):
    _, table = study
    roles = dict(table.filter(pl.col("method").is_not_null())
                 .select("method", "role").unique().iter_rows())  # fmt: skip
    assert roles == {"self_confidence": "consistency_training",
                     "multi_view": "consistency_training", "greedy_self_training": "control",
                     "rejection_sampling": "control", "bct": "paired_loss"}  # fmt: skip
    assert table.filter(method="bct")["term"].unique().to_list() == ["total"]
    greedy = table.filter(method="greedy_self_training", behaviour="syc")
    assert not greedy["has_selection"].any()
    assert greedy.filter(term="selection")["estimate"].item() == 0.0  # the same runs
    # The pooled parts average the consistency-training methods with selection only.
    per = table.filter(pl.col("method").is_in(["self_confidence", "multi_view"]),
                       behaviour="syc", term="selection")  # fmt: skip
    pooled = table.filter(pl.col("method").is_null(), behaviour="syc", term="selection")
    assert pooled["estimate"].item() == pytest.approx(per["estimate"].mean())
    comparators = table.filter(pl.col("role") == "comparator")
    assert set(comparators["term"]) == {"relabeling", "reference"}
    assert comparators["method"].is_null().all()


def test_a_method_without_selection_by_its_candidate_count():
    runs = simulate_runs(selection_effect=-0.2, seed=0).with_columns(
        pl.when(pl.col("method") == "multi_view").then(None).otherwise(1).alias("k")
    )
    with pytest.warns(UserWarning, match="self_confidence: no selection"):
        table = decompose(runs)
    assert not table.filter(method="self_confidence")["has_selection"].any()
    pooled = table.filter(pl.col("method").is_null(), term="selection")["estimate"].item()
    assert pooled == table.filter(method="multi_view", term="selection")["estimate"].item()


def test_organisms_missing_an_arm_are_left_out_loudly():
    runs = simulate_runs(seed=0)
    holes = runs.filter(~((pl.col("arm") == "shuffled")
                          & (pl.col("organism_id") == "base0__sycophancy__s0")))  # fmt: skip
    with pytest.warns(UserWarning, match="1 organism.s. without full, shuffled and none"):
        table = decompose(holes)
    assert set(table.filter(term="selection")["n_clusters"]) == {26}
    with pytest.raises(ShiftlabError, match="no organism has both a 'full' and a 'none'"):
        decompose(runs.filter(pl.col("arm") != "none"))


def test_empty_training_sets_count_as_no_change():
    runs = simulate_runs(selection_effect=-0.2, seed=0)
    empty = runs.with_columns(
        pl.when((pl.col("arm") == "full") & (pl.col("method") == "multi_view"))
        .then(0.0)
        .otherwise(pl.col("delta"))
        .alias("delta")
    )
    table = decompose(empty).filter(method="multi_view")
    assert table.filter(term="total")["estimate"].item() == 0.0
    assert table.filter(term="total")["n_clusters"].item() == 27
