"""OLS with cluster-robust errors, fixed effects and the mixed model."""

import warnings

import polars as pl
import pytest

from shiftlab.attribution import fit_cluster_ols, fit_fixed_effects, fit_mixed, simulate_runs
from shiftlab.errors import ShiftlabError


def _runs(seed=0, **effects):
    runs = simulate_runs(seed=seed, **effects)
    return runs.filter(pl.col("run_id").is_not_null()).unique("run_id", maintain_order=True)


def test_cluster_robust_errors_agree_with_pyfixest_crv1():
    pyfixest = pytest.importorskip("pyfixest")
    runs = _runs(selection_effect=-0.2, shift_effect=0.1)
    ours = fit_cluster_ols(runs, "delta ~ C(arm) + shift_mmd", "organism_id")
    data = runs.to_pandas()
    theirs = pyfixest.feols("delta ~ C(arm) + shift_mmd", data=data, vcov={"CRV1": "organism_id"})
    tidy = theirs.tidy()
    assert len(tidy) == ours.height == 5
    for term in tidy.index:
        mine = ours.filter(term=term).row(0, named=True)
        assert mine["estimate"] == pytest.approx(tidy.loc[term, "Estimate"], abs=1e-9)
        assert mine["se"] == pytest.approx(tidy.loc[term, "Std. Error"], abs=1e-6)
        assert mine["p_value"] == pytest.approx(tidy.loc[term, "Pr(>|t|)"], abs=1e-6)


def test_rows_with_missing_values_are_dropped_once_before_the_fit():
    runs = _runs(selection_effect=-0.2).with_row_index()
    holes = runs.with_columns(
        pl.when(pl.col("index") % 7 == 0).then(None).otherwise(pl.col("delta")).alias("delta"),
        pl.when(pl.col("index") % 11 == 0).then(None).otherwise(pl.col("organism_id"))
        .alias("organism_id"),
    )  # fmt: skip
    complete = holes.drop_nulls(["delta", "organism_id"])
    got = fit_cluster_ols(holes, "delta ~ C(arm)", "organism_id")
    expected = fit_cluster_ols(complete, "delta ~ C(arm)", "organism_id")
    assert got.equals(expected)
    assert got["n"][0] == complete.height < runs.height


def test_one_cluster_and_a_bad_formula_are_clear_errors():
    runs = _runs().with_columns(pl.lit("only").alias("organism_id"))
    with pytest.raises(ShiftlabError, match="at least 2 clusters; 'organism_id' has 1"):
        fit_cluster_ols(runs, "delta ~ C(arm)", "organism_id")
    with pytest.raises(ShiftlabError, match="formula 'delta ~ nope'"):
        fit_cluster_ols(_runs(), "delta ~ nope", "organism_id")


def test_coefficients_the_clusters_cannot_identify_are_an_error():
    from shiftlab.attribution._frame import estimates
    from shiftlab.attribution._regression import _identified

    fit = estimates([{"term": "a", "se": 0.1, "n_clusters": 2},
                     {"term": "b", "se": float("nan"), "n_clusters": 2}])  # fmt: skip
    with pytest.raises(ShiftlabError, match=r"1 coefficient\(s\) have no cluster-robust error "
                       r"with 2 organism_id clusters \(e.g. b\)"):  # fmt: skip
        _identified(fit, "organism_id")


def test_fixed_effects_recover_the_arm_effect_without_listing_the_dummies():
    runs = _runs(selection_effect=-0.3, base_sd=0.5).filter(
        pl.col("arm").is_in(["full", "shuffled"])
    )
    fit = fit_fixed_effects(runs, "delta ~ C(arm)")
    assert fit["term"].to_list() == ["Intercept", "C(arm)[T.shuffled]"]
    assert fit.filter(term="C(arm)[T.shuffled]")["estimate"].item() == pytest.approx(0.3, abs=0.05)
    assert set(fit["analysis"]) == {"fixed_effects"}


def test_the_mixed_model_with_enough_bases_and_its_fallback():
    runs = _runs(selection_effect=-0.2, base_sd=0.3).filter(
        pl.col("arm").is_in(["full", "shuffled"])
    )
    runs = pl.concat([runs, _runs(seed=5, selection_effect=-0.2, base_sd=0.3)
                      .filter(pl.col("arm").is_in(["full", "shuffled"]))
                      .with_columns(pl.col("base_model") + "b")])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_mixed(runs, "delta ~ C(arm)", group="base_model")
    assert set(fit["analysis"]) == {"mixed"} and fit["n_clusters"][0] == 6
    effect = fit.filter(term="C(arm)[T.shuffled]")["estimate"].item()
    assert effect == pytest.approx(0.2, abs=0.05)
    one_base = runs.with_columns(pl.lit("b").alias("base_model"))
    with pytest.warns(UserWarning, match=r"1 level\(s\); a random intercept needs 2"):
        fallback = fit_mixed(one_base, "delta ~ C(arm)", group="base_model")
    assert set(fallback["analysis"]) == {"mixed_fallback_ols"}
    assert fallback["se"].is_finite().all()
