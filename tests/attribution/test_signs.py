"""Exact sign tests of the direction of behaviour change, over organisms."""

import polars as pl
import pytest
from scipy.stats import binomtest

from shiftlab.attribution import sign_tests, simulate_runs
from shiftlab.errors import ShiftlabError


def _runs(deltas, method="self_confidence", organisms=None):
    return pl.DataFrame(
        {"behaviour": "syc", "method": method, "arm": "full", "k": None, "delta": deltas,
         "organism_id": organisms or [f"o{i}" for i in range(len(deltas))]},
        schema_overrides={"k": pl.Int64},
    )  # fmt: skip


def test_organisms_are_counted_down_unmoved_and_up():
    # Two runs per organism: o0 and o1 down, o2 unmoved (its runs cancel), o3 up.
    runs = _runs([-0.1, -0.2, -0.3, 0.0, 0.2, -0.2, 0.1, 0.3],
                 organisms=["o0", "o0", "o1", "o1", "o2", "o2", "o3", "o3"])  # fmt: skip
    row = sign_tests(runs).filter(analysis="sign_test").row(0, named=True)
    assert (row["n_down"], row["n_unmoved"], row["n_up"]) == (2, 1, 1)
    assert (row["n"], row["n_clusters"]) == (3, 4)
    exact = binomtest(2, 3)
    assert row["estimate"] == pytest.approx(2 / 3) and row["p_value"] == pytest.approx(exact.pvalue)
    interval = exact.proportion_ci(method="exact")
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((interval.low, interval.high))
    assert row["p_min"] == 2 / 2**3


def test_a_threshold_says_what_moved_means():
    runs = _runs([-0.01, -0.2, 0.3, 0.005])
    row = sign_tests(runs, moved_at=0.02).filter(analysis="sign_test").row(0, named=True)
    assert (row["n_down"], row["n_unmoved"], row["n_up"]) == (1, 2, 1)


def test_controls_and_paired_losses_are_not_pooled_into_consistency_training():
    runs = pl.concat([_runs([-0.1] * 6), _runs([0.2] * 6, "bct"),
                      _runs([0.2] * 6, "greedy_self_training")])  # fmt: skip
    table = sign_tests(runs)
    pooled = table.filter(analysis="sign_test").row(0, named=True)
    assert (pooled["n_down"], pooled["n_up"]) == (6, 0)
    roles = dict(table.filter(analysis="sign_test_by_method").select("method", "role").rows())
    assert roles == {"bct": "paired_loss", "greedy_self_training": "control",
                     "self_confidence": "consistency_training"}  # fmt: skip


def test_runs_of_one_organism_count_once():
    down = sign_tests(simulate_runs(selection_effect=-0.3, n_seeds=3, seed=2))
    row = down.filter(analysis="sign_test").row(0, named=True)
    assert row["n_clusters"] == 27 and row["n"] <= 27
    assert row["p_value"] >= row["p_min"] == 2 / 2**27


def test_families_are_adjusted_separately():
    runs = pl.concat([_runs([-0.1] * 9 + [0.1], "self_confidence"),
                      _runs([-0.1] * 5 + [0.1] * 5, "multi_view")])  # fmt: skip
    by_method = sign_tests(runs).filter(analysis="sign_test_by_method").sort("method")
    p = by_method["p_value"].to_list()
    assert by_method["p_adjusted"].to_list() == pytest.approx([max(p), min(1, 2 * min(p))])


def test_no_runs_of_the_arm_is_an_error():
    with pytest.raises(ShiftlabError, match="no runs of arm 'shuffled'"):
        sign_tests(_runs([0.1, -0.1]), arm="shuffled")
