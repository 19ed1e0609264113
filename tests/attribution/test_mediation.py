"""Mediation through a representation shift measure, and when it is refused."""

import polars as pl
import pytest

from shiftlab.attribution import mediation, simulate_runs
from shiftlab.errors import ShiftlabError


def test_a_wholly_mediated_contrast_is_found():
    effects = mediation(simulate_runs(reference_effect=-0.2, seed=4), n_boot=500)
    by_term = {r["term"]: r for r in effects.iter_rows(named=True)}
    assert set(effects["analysis"]) == {"mediation_shift_mmd"}  # the default mediator
    assert by_term["total"]["estimate"] == pytest.approx(-0.2, abs=0.04)
    assert by_term["indirect"]["ci_high"] < 0
    assert by_term["direct"]["ci_low"] < 0 < by_term["direct"]["ci_high"]
    proportion = by_term["proportion_mediated"]
    assert proportion["p_value"] is None and proportion["estimate"] == pytest.approx(1, abs=0.3)
    # Shared relabeled/original runs count once: 27 organisms x 2 arms.
    assert by_term["total"]["n"] == 54 and by_term["total"]["ci_low"] >= -1


def test_no_proportion_when_the_total_could_be_zero():
    with pytest.warns(UserWarning, match="no proportion mediated, the total's interval includes 0"):
        effects = mediation(simulate_runs(seed=4), n_boot=300)
    assert "proportion_mediated" not in set(effects["term"])


def test_refused_with_few_organisms_or_a_mediator_that_does_not_vary():
    few = simulate_runs(reference_effect=-0.2, n_bases=1, organisms_per_base=4, seed=0)
    with pytest.raises(ShiftlabError, match="G = 4 organisms; at least 6 are needed"):
        mediation(few)
    # The mediator moves with the arm only: its path is not identified.
    flat = simulate_runs(reference_effect=-0.2, seed=0).with_columns(
        (pl.col("arm") == "original").cast(pl.Float64).alias("shift_mmd")
    )
    with pytest.raises(ShiftlabError, match="does not vary within organisms beyond the arm"):
        mediation(flat)


def test_mediation_needs_its_mediator_and_both_arms():
    runs = simulate_runs(seed=0)
    with pytest.raises(ShiftlabError, match=r"needs column\(s\) shift_energy"):
        mediation(runs, "shift_energy")
    with pytest.raises(ShiftlabError, match="needs both 'original' and 'relabeled'"):
        mediation(runs.filter(pl.col("arm") != "original"))


def test_every_effect_interval_stays_inside_the_range_of_a_rate_difference():
    from scipy import stats

    # Six noisy organisms: the bootstrap spread of a*b and c' reaches past [-1, 1].
    runs = simulate_runs(reference_effect=-0.2, n_bases=1, organisms_per_base=6, noise=0.1,
                         seed=0)  # fmt: skip
    effects = mediation(runs, n_boot=300).filter(pl.col("term") != "proportion_mediated")
    half_width = stats.t.ppf(0.975, 5) * effects["se"]
    reached = (effects["estimate"] - half_width < -1) | (effects["estimate"] + half_width > 1)
    assert reached.any()  # the case the clipping is for
    assert effects["ci_low"].min() >= -1 and effects["ci_high"].max() <= 1
    assert ((effects["ci_low"] <= effects["estimate"])
            & (effects["estimate"] <= effects["ci_high"])).all()  # fmt: skip


def test_refused_when_a_nearly_collinear_mediator_extrapolates_past_any_rate():
    runs = simulate_runs(reference_effect=-0.2, n_bases=1, organisms_per_base=6,
                         shift_noise=0.005, seed=0)  # fmt: skip
    with pytest.raises(ShiftlabError, match=r"the fitted indirect [-+]\d+\.\d+ and direct "
                       r"[-+]\d+\.\d+ lie outside \[-1, 1\]"):  # fmt: skip
        mediation(runs, n_boot=200)
