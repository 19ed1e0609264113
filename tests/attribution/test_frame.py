"""The estimate frame, input checks and p-value adjustment."""

from unittest import mock

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shiftlab.attribution import (
    ESTIMATE_SCHEMA,
    adjust_p_values,
    full_k_runs,
    headline_runs,
    sign_tests,
    within,
)
from shiftlab.attribution._frame import estimates, require_columns
from shiftlab.errors import ShiftlabError


def test_holm_and_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, made monotone.
    assert adjust_p_values(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: sorted p times 4/rank, made monotone from the top.
    assert adjust_p_values(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])


# Grid values make ties and products over 1 common.
P_VALUES = st.lists(st.integers(0, 20).map(lambda i: i / 20), min_size=1, max_size=30)


@given(P_VALUES)
def test_holm_equals_statsmodels(p):
    from statsmodels.stats.multitest import multipletests

    with mock.patch("gc.collect"):  # statsmodels' Holm collects garbage on every call
        theirs = multipletests(np.array(p), method="holm")[1]
    ours = adjust_p_values(p, "holm")
    assert ours == pytest.approx(theirs.tolist(), abs=1e-15)
    assert all(a >= b for a, b in zip(ours, p, strict=True))  # never below p


def test_holm_collects_no_garbage():
    # A full collection costs 0.3 s in a process that holds torch, several times a report.
    with mock.patch("gc.collect", side_effect=AssertionError("gc.collect() called")):
        assert adjust_p_values([0.01, 0.04], "holm") == pytest.approx([0.02, 0.04])


def test_missing_p_values_stay_missing_and_leave_the_family():
    assert adjust_p_values([None, 0.02, float("nan"), 0.04], "holm") == [None, 0.04, None, 0.04]
    with pytest.raises(ShiftlabError, match="expected one of"):
        adjust_p_values([0.1], "bonferonni")


def test_estimates_have_the_schema_with_absent_columns_null():
    frame = estimates([{"analysis": "x", "term": "t", "estimate": 1.0}])
    assert frame.schema == pl.Schema(ESTIMATE_SCHEMA)
    assert frame["se"].is_null().all()


def test_a_missing_column_is_named():
    with pytest.raises(ShiftlabError, match=r"sign_tests needs column\(s\) delta, organism_id"):
        sign_tests(pl.DataFrame({"behaviour": ["b"], "method": ["m"], "arm": ["full"], "k": [1]}))
    with pytest.raises(ShiftlabError, match=r"needs column\(s\) z; the table has a"):
        require_columns(pl.DataFrame({"a": [1]}), ["a", "z"], "this")


def test_headline_runs_keep_the_full_candidate_count_and_drop_none():
    runs = pl.DataFrame(
        {"method": ["m", "m", "m", "n"], "arm": ["full", "full", "none", "full"],
         "k": [1, 4, None, None], "delta": [0.1, 0.2, 0.0, 0.3]}
    )  # fmt: skip
    assert headline_runs(runs)["delta"].to_list() == [0.2, 0.3]
    assert full_k_runs(runs)["delta"].to_list() == [0.2, 0.0, 0.3]


def test_intervals_are_clipped_to_the_parameters_range():
    frame = estimates([{"estimate": 0.5, "ci_low": -1.4, "ci_high": 1.2},
                       {"estimate": 0.1, "ci_low": 0.0, "ci_high": 0.2}])  # fmt: skip
    clipped = within(frame)
    assert clipped["ci_low"].to_list() == [-1.0, 0.0] and clipped["ci_high"].to_list() == [1.0, 0.2]
