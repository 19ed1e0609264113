"""Verdicts: a part is credited only with the change's sign, clear of 0, from G >= 6."""

import polars as pl

from shiftlab.attribution import attribute
from shiftlab.attribution._decompose import DECOMPOSITION_SCHEMA


def _table(total, selection, label_shift, g=10, has_selection=True):
    rows = [{"analysis": "decomposition", "behaviour": "syc", "method": None, "term": term,
             "estimate": value[0], "ci_low": value[1], "ci_high": value[2], "p_value": 0.01,
             "p_min": 2 / 2**g, "n_clusters": g, "role": "consistency_training",
             "has_selection": has_selection}
            for term, value in (("total", total), ("selection", selection),
                                ("label_shift", label_shift))]  # fmt: skip
    return pl.DataFrame(rows, schema=DECOMPOSITION_SCHEMA)


def _verdict(*args, **kwargs):
    row = attribute(_table(*args, **kwargs)).row(0, named=True)
    return row["attributed_to"], row["reason"]


def test_a_part_with_the_changes_sign_and_clear_of_zero():
    assert _verdict((-0.3, -0.4, -0.2), (-0.25, -0.35, -0.15), (-0.05, -0.2, 0.1))[0] == "selection"
    both = _verdict((-0.3, -0.4, -0.2), (-0.2, -0.3, -0.1), (-0.1, -0.15, -0.05))
    assert both[0] == "both" and "intervals exclude 0" in both[1]


def test_a_part_against_the_change_is_never_credited():
    verdict = _verdict((-0.2, -0.3, -0.1), (0.1, 0.05, 0.15), (-0.3, -0.5, -0.1))
    assert verdict[0] == "label_shift"
    none = _verdict((-0.2, -0.3, -0.1), (0.1, 0.05, 0.15), (-0.3, -0.6, 0.1))
    assert none == (None, "neither part has the change's sign with an interval that excludes 0")


def test_no_verdict_without_a_change_enough_organisms_or_a_selection_step():
    assert _verdict((-0.1, -0.3, 0.1), (-0.1, -0.2, -0.05), (0, -0.1, 0.1)) == (
        None, "the total's interval includes 0: no change to attribute")  # fmt: skip
    assert _verdict((-0.3, -0.4, -0.2), (-0.3, -0.4, -0.2), (0, -0.1, 0.1), g=5) == (
        None, "G = 5 organisms; at least 6 are needed")  # fmt: skip
    assert _verdict((-0.3, -0.4, -0.2), (0, 0, 0), (-0.3, -0.4, -0.2), has_selection=False)[1] == (
        "no selection step: full and shuffled train on the same labels")  # fmt: skip
    assert attribute(_table((-0.3, -0.4, -0.2), (-0.3, -0.4, -0.2), (0, -0.1, 0.1), g=5),
                     min_organisms=5)["attributed_to"].item() == "selection"  # fmt: skip
