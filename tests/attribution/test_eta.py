"""The η(s) diagnostic."""

import polars as pl
import pytest

from shiftlab._stats import wilson_interval
from shiftlab.attribution import eta_curve
from shiftlab.errors import ShiftlabError


def _pool(method="m"):
    return pl.DataFrame(
        [{"score": s / 100, "misbehaving": float(s < 30), "chosen": s >= 60, "method": method,
          "behaviour": "syc"} for s in range(100)]
    )  # fmt: skip


def test_binned_rates_with_wilson_intervals_and_the_selection_bound():
    curve = eta_curve(_pool(), n_bins=5)
    eta = curve.filter(term="eta")
    assert eta["estimate"].to_list() == [1.0, 0.5, 0.0, 0.0, 0.0]
    assert (eta["ci_low"][1], eta["ci_high"][1]) == pytest.approx(wilson_interval(10, 20))
    assert eta["score_low"][0] == 0.0 and eta["score_high"][-1] == 0.99
    assert curve.filter(term="selection_bound")["estimate"].item() == 1.0


def test_groups_by_method_and_an_unselective_score_bounds_nothing():
    flat = _pool("flat").with_columns((pl.int_range(pl.len()) % 2 == 0).alias("chosen"))
    curve = eta_curve(pl.concat([_pool(), flat]), n_bins=5)
    bounds = dict(curve.filter(term="selection_bound").select("method", "estimate").iter_rows())
    assert bounds["m"] == 1.0 and bounds["flat"] < 0.05


def test_no_rated_candidate_is_an_error():
    with pytest.raises(ShiftlabError, match="no candidate has both a score and a verdict"):
        eta_curve(_pool().with_columns(pl.lit(None, pl.Float64).alias("misbehaving")))
