"""Selection vs labelling shift, mediation through shift, and their coverage."""

import numpy as np
import polars as pl
import pytest

from shiftlab.attribution import decompose, mediation, simulate_runs
from shiftlab.errors import ShiftlabError


def test_planted_effects_are_recovered_per_method_and_pooled():
    table = decompose(simulate_runs(selection_effect=-0.2, shift_effect=0.15, seed=3), n_boot=500)
    assert set(table["method"].drop_nulls()) == {"self_confidence", "multi_view"}
    for row in table.iter_rows(named=True):
        truth = -0.2 if row["term"] == "selection" else 0.15
        assert abs(row["estimate"] - truth) < 4 * row["se"]
        assert row["ci_low"] < row["estimate"] < row["ci_high"]
        assert row["n"] == row["n_clusters"] == 27 and row["p_value"] < 0.01
        assert row["p_adjusted"] >= row["p_value"]


def test_an_arm_contrast_with_no_paired_organism_is_an_error():
    runs = simulate_runs(seed=0).filter(pl.col("arm") != "shuffled")
    with pytest.raises(ShiftlabError, match="no two organisms have both 'full' and 'shuffled'"):
        decompose(runs)
    one = simulate_runs(seed=0, n_bases=1, organisms_per_base=1)
    with pytest.raises(ShiftlabError, match="no two organisms have both 'full' and 'shuffled'"):
        decompose(one)
    # A method with one paired organism is left out, loudly; the rest is estimated.
    thin = simulate_runs(seed=0).filter(
        ~((pl.col("method") == "multi_view") & (pl.col("arm") == "shuffled")
          & (pl.col("organism_id") != "base0__sycophancy__s0"))
    )  # fmt: skip
    with pytest.warns(UserWarning, match="1 contrast.s. with a single paired organism"):
        table = decompose(thin, n_boot=200)
    assert table.filter(method="multi_view", term="selection").is_empty()
    assert not table.filter(method="self_confidence", term="selection").is_empty()
    with pytest.raises(ShiftlabError, match="at least 100 bootstrap draws"):
        decompose(simulate_runs(seed=0), n_boot=10)


def test_mediation_finds_a_wholly_mediated_shift_effect():
    effects = mediation(simulate_runs(shift_effect=0.2, seed=4), n_boot=500)
    by_term = {r["term"]: r for r in effects.iter_rows(named=True)}
    assert by_term["total"]["estimate"] == pytest.approx(0.2, abs=0.04)
    assert by_term["indirect"]["estimate"] == pytest.approx(0.2, abs=0.08)
    assert by_term["indirect"]["ci_low"] > 0
    assert by_term["direct"]["ci_low"] < 0 < by_term["direct"]["ci_high"]
    assert by_term["proportion_mediated"]["p_value"] is None
    # Shared relabeled/original runs count once: 27 organisms x 2 arms.
    assert by_term["total"]["n"] == 54


def test_mediation_needs_its_mediator_and_both_arms():
    runs = simulate_runs(seed=0)
    with pytest.raises(ShiftlabError, match=r"needs column\(s\) shift_mmd"):
        mediation(runs, "shift_mmd")
    with pytest.raises(ShiftlabError, match="needs both 'relabeled' and 'original'"):
        mediation(runs.filter(pl.col("arm") != "original"))


@pytest.mark.slow
def test_intervals_cover_the_truth_and_estimates_are_unbiased():
    truth = {"selection": -0.1, "labelling_shift": 0.08}
    covered = {term: 0 for term in truth}
    estimates = {term: [] for term in truth}
    replicates = 200
    for seed in range(replicates):
        runs = simulate_runs(
            selection_effect=truth["selection"],
            shift_effect=truth["labelling_shift"],
            noise=0.1,
            seed=seed,
        )
        table = decompose(runs, n_boot=1000, seed=seed).filter(pl.col("method").is_null())
        for row in table.iter_rows(named=True):
            term = row["term"]
            covered[term] += row["ci_low"] <= truth[term] <= row["ci_high"]
            estimates[term].append(row["estimate"])
    for term, value in truth.items():
        assert 0.92 <= covered[term] / replicates <= 0.98, (term, covered[term])
        assert abs(np.mean(estimates[term]) - value) <= 0.1 * abs(value)
