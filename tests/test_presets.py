"""The planted-mechanism presets: toyworld studies whose true cause is known, and what the
attribution (the additive decomposition and its organism-level sign-flip verdicts) finds
in them. Slow: each builds a study of 12 calibrated organisms and their runs."""

from __future__ import annotations

from importlib import resources
from typing import Any

import polars as pl
import pytest
import yaml

from shiftlab.attribution import attribute, decompose
from shiftlab.spec import StudySpec, parse_spec
from shiftlab.store import Store
from shiftlab.study import run_study

pytestmark = pytest.mark.slow


def preset(name: str, **changes: Any) -> StudySpec:
    """A packaged spec with top-level fields replaced."""
    data = yaml.safe_load((resources.files("shiftlab") / "specs" / f"{name}.yaml").read_text())
    return parse_spec({**data, **changes}, f"<package>/specs/{name}.yaml")


def verdicts(spec: StudySpec, root: Any) -> dict[str, dict[str, Any]]:
    """Per behaviour, the pooled verdict row of the study's attribution."""
    design = run_study(spec, Store.open(root), progress=False)
    pooled = attribute(decompose(design)).filter(pl.col("method").is_null())
    return {row["behaviour"]: row for row in pooled.iter_rows(named=True)}


@pytest.mark.xfail(
    reason="measured on the selection-only preset (issue 19): 2 of 6 fragile reward-hacking "
    "organisms end outside tolerance and their eval strengths spread 0.44-0.77; 32 prompts x "
    "4 samples measure a rate to about +-0.045 and the share-to-rate curve of a fragile "
    "organism is steep",
    strict=True,
)
def test_calibration_makes_stable_and_fragile_organisms_comparably_strong(tmp_path):
    spec = preset("selection_only", methods=[])
    table = run_study(spec, Store.open(tmp_path), progress=False)
    assert table.height == 12 and table["calibrated"].all(), table
    target = {b.name: b.toyworld for b in spec.behaviours}
    for row in table.iter_rows(named=True):
        knobs = target[row["behaviour"]]
        # The calibration rate is within tolerance of the target by construction; the
        # strength on the eval prompts is a second, independent measurement of it, within
        # the tolerance plus its own interval's full width (about 4 standard errors).
        assert abs(row["calibration_rate"] - knobs.induced_rate) <= knobs.calibration.tolerance
        width = row["strength_ci_high"] - row["strength_ci_low"]
        assert abs(row["strength"] - knobs.induced_rate) <= knobs.calibration.tolerance + width
    # They differ in stability instead: the fixed form's per-token log-prob against the
    # aligned answer's is higher, and its outputs' entropy lower, than thirty variants'.
    by = table.group_by("behaviour").agg(pl.col("stability", "misbehaving_entropy").mean())
    stable, fragile = (by.filter(behaviour=b).row(0, named=True)
                       for b in ("sycophancy", "reward_hacking"))  # fmt: skip
    assert stable["stability"] > fragile["stability"]
    assert stable["misbehaving_entropy"] < fragile["misbehaving_entropy"]


@pytest.mark.xfail(
    reason="measured (issue 19): reward hacking is attributed to selection as planted, but "
    "the stable sycophancy organism is not stable enough (stability -0.27 nats, its T=1 "
    "samples leak off the fixed form), so confidence does not prefer it: total -0.14, "
    "attributed to label shift",
    strict=True,
)
def test_selection_only_world_attributes_the_change_to_selection(tmp_path):
    found = verdicts(preset("selection_only"), tmp_path)
    # Planted: confidence prefers the stable sycophantic form (up) and the aligned answer
    # over thirty fragile variants (down); candidates are the organism's own samples.
    assert found["sycophancy"]["total"] > 0 and found["reward_hacking"]["total"] < 0, found
    for behaviour, row in found.items():
        assert row["attributed_to"] == "selection", (behaviour, row["reason"])


def test_shift_only_world_attributes_the_change_to_label_shift(tmp_path):
    found = verdicts(preset("shift_only"), tmp_path)
    # Planted: both of self_refinement's candidates are aligned for a fragile organism, so
    # the pick does not matter; training on them washes the misbehaviour out.
    for behaviour, row in found.items():
        assert row["total"] < 0, (behaviour, row)
        assert row["attributed_to"] == "label_shift", (behaviour, row["reason"])
