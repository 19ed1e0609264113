"""The η(s) diagnostic, its bound on label composition and the observed label selection."""

import numpy as np
import polars as pl
import pytest

from shiftlab._stats import wilson_interval
from shiftlab.attribution import eta_curve
from shiftlab.errors import ShiftlabError


def _pool(n_prompts=50, n_candidates=2, method="m", selection="argmax", seed=0):
    """Candidates whose misbehaviour depends on the score only; argmax picks the best."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        scores = rng.uniform(0, 1, n_candidates)
        best = int(np.argmax(scores))
        for c, score in enumerate(scores):
            rows.append(
                {
                    "prompt_id": f"p{p}",
                    "candidate": c,
                    "score": float(score),
                    "misbehaving": float(rng.uniform() < score),
                    "chosen": c == best,
                    "selection": selection,
                    "method": method,
                    "behaviour": "syc",
                }
            )
    return pl.DataFrame(rows)  # fmt: skip


def test_binned_rates_with_wilson_intervals():
    curve = eta_curve(_pool(n_prompts=200), n_bins=5).filter(term="eta")
    assert curve.height == 5 and curve["n"].sum() == 400
    first = curve.row(0, named=True)
    k = round(first["estimate"] * first["n"])
    assert (first["ci_low"], first["ci_high"]) == pytest.approx(wilson_interval(k, first["n"]))
    assert curve["estimate"][-1] > curve["estimate"][0]  # misbehaviour rises with score


def test_discrete_scores_are_binned_on_their_values():
    pool = _pool().with_columns(
        (pl.col("candidate") == 1).cast(pl.Float64).alias("score"),
        (pl.col("candidate") == 1).alias("chosen"),
        (pl.col("candidate") == 1).cast(pl.Float64).alias("misbehaving"),
    )
    curve = eta_curve(pool)
    eta = curve.filter(term="eta")
    assert eta["score_low"].to_list() == eta["score_high"].to_list() == [0.0, 1.0]
    assert eta["estimate"].to_list() == [0.0, 1.0]
    # Always picking the misbehaving candidate moves the labels by 1 - 1/2.
    assert curve.filter(term="label_selection")["estimate"].item() == pytest.approx(0.5)
    assert curve.filter(term="selection_bound")["estimate"].item() == pytest.approx(0.5)


def test_the_bound_holds_the_observed_label_selection_when_eta_drives_it():
    for seed in range(5):
        curve = eta_curve(_pool(n_prompts=400, n_candidates=4, seed=seed), n_bins=10)
        observed = curve.filter(term="label_selection")["estimate"].item()
        bound = curve.filter(term="selection_bound")["estimate"].item()
        assert 0 < observed <= bound + 0.05


def test_one_candidate_per_prompt_bounds_nothing():
    curve = eta_curve(_pool(n_candidates=1))
    assert curve.filter(term="selection_bound")["estimate"].item() == 0.0
    assert curve.filter(term="label_selection")["estimate"].item() == 0.0


def test_a_filter_compares_kept_with_randomly_kept_prompts():
    pool = _pool(n_candidates=3, selection="filter").with_columns(
        (pl.col("candidate") == 0).and_(pl.col("score") > 0.5).alias("chosen")
    )
    curve = eta_curve(pool)
    standard = pool.filter(candidate=0)
    assert curve.filter(term="eta")["n"].sum() == standard.height
    expected = (standard.filter("chosen")["misbehaving"].mean()
                - standard["misbehaving"].mean())  # fmt: skip
    observed = curve.filter(term="label_selection")["estimate"].item()
    assert observed == pytest.approx(expected)


def test_groups_by_method_and_no_rated_candidate_is_an_error():
    curve = eta_curve(pl.concat([_pool(method="a"), _pool(method="b", seed=1)]))
    assert set(curve["method"]) == {"a", "b"}
    with pytest.raises(ShiftlabError, match="no candidate has both a score and a verdict"):
        eta_curve(_pool().with_columns(pl.lit(None, pl.Float64).alias("misbehaving")))
