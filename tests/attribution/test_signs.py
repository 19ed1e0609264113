"""Exact sign tests of the direction of behaviour change."""

import polars as pl
import pytest
from scipy.stats import binomtest

from shiftlab.attribution import sign_tests, simulate_runs
from shiftlab.errors import ShiftlabError


def _runs(deltas, method="m"):
    return pl.DataFrame(
        {"behaviour": "syc", "method": method, "arm": "full", "k": None,
         "delta": deltas, "organism_id": [f"o{i % 3}" for i in range(len(deltas))]},
        schema_overrides={"k": pl.Int64},
    )  # fmt: skip


def test_counts_p_value_and_exact_interval():
    table = sign_tests(_runs([-0.1] * 8 + [0.2] * 2 + [0.0]))  # the tie is left out
    row = table.filter(analysis="sign_test").row(0, named=True)
    exact = binomtest(8, 10)
    interval = exact.proportion_ci(method="exact")
    assert (row["n"], row["n_clusters"]) == (10, 3)
    assert row["estimate"] == 0.8 and row["p_value"] == pytest.approx(exact.pvalue)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((interval.low, interval.high))


def test_families_are_adjusted_separately():
    runs = pl.concat([_runs([-0.1] * 9 + [0.1], "a"), _runs([-0.1] * 5 + [0.1] * 5, "b")])
    by_method = sign_tests(runs).filter(analysis="sign_test_by_method").sort("method")
    p = by_method["p_value"].to_list()
    assert by_method["p_adjusted"].to_list() == pytest.approx([min(1, 2 * min(p)), max(p)])


def test_a_planted_direction_is_found_and_no_effect_is_not():
    down = sign_tests(simulate_runs(selection_effect=-0.3, seed=2))
    flat = sign_tests(simulate_runs(seed=2, organism_sd=0, base_sd=0), arm="shuffled")
    assert down.filter(analysis="sign_test")["p_value"].item() < 1e-6
    assert flat.filter(analysis="sign_test")["p_value"].item() > 0.01


def test_no_runs_of_the_arm_is_an_error():
    with pytest.raises(ShiftlabError, match="no runs of arm 'shuffled'"):
        sign_tests(_runs([0.1, -0.1]), arm="shuffled")
