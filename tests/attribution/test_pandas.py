"""Every analysis takes a pandas design table as well as a polars one, with the same
answer, and the package's face exposes them without importing torch or polars."""

import subprocess
import sys
import warnings

import polars as pl
import pytest

import shiftlab
from shiftlab.attribution import (
    attribute,
    decompose,
    fit_cluster_ols,
    mediation,
    method_table,
    organism_mean,
    sign_tests,
    simulate_runs,
)


@pytest.fixture(scope="module")
def runs():
    return simulate_runs(selection_effect=-0.2, shift_effect=0.1, seed=3)


@pytest.mark.parametrize(
    "analysis",
    [
        decompose,
        sign_tests,
        method_table,
        lambda r: attribute(decompose(r)),
        lambda r: fit_cluster_ols(r, "delta ~ C(arm)"),
        lambda r: mediation(r, n_boot=100),
        lambda r: pl.DataFrame([organism_mean(r)]),
    ],
    ids=["decompose", "sign_tests", "method_table", "attribute", "ols",
         "mediation", "organism_mean"],
)  # fmt: skip
def test_pandas_in_polars_out_with_the_same_answer(runs, analysis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_polars = analysis(runs)
        from_pandas = analysis(runs.to_pandas())
    assert isinstance(from_pandas, pl.DataFrame)
    assert from_pandas.equals(from_polars)


def test_the_package_face_is_lazy_and_complete():
    code = (
        "import sys, shiftlab\n"
        "assert 'torch' not in sys.modules and 'polars' not in sys.modules\n"
        "assert {'open_store', 'load_spec', 'run_study', 'decompose'} <= set(dir(shiftlab))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in ("open_store", "load_spec", "parse_spec", "run_study", "decompose", "attribute",
                 "sign_tests", "mediation", "compare_samples", "export_inspect"):  # fmt: skip
        assert callable(getattr(shiftlab, name)), name
    assert shiftlab.decompose is decompose
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = shiftlab.nope
