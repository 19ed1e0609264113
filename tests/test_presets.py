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


def preset_data(name: str) -> dict[str, Any]:
    """A packaged spec as read from its YAML."""
    return yaml.safe_load((resources.files("shiftlab") / "specs" / f"{name}.yaml").read_text())


def preset(name: str, **changes: Any) -> StudySpec:
    """A packaged spec with top-level fields replaced."""
    return parse_spec({**preset_data(name), **changes}, f"<package>/specs/{name}.yaml")


def verdicts(spec: StudySpec, root: Any) -> dict[str, dict[str, Any]]:
    """Per behaviour, the pooled verdict row of the study's attribution."""
    design = run_study(spec, Store.open(root), progress=False, workers=2)
    pooled = attribute(decompose(design)).filter(pl.col("method").is_null())
    return {row["behaviour"]: row for row in pooled.iter_rows(named=True)}


@pytest.fixture(scope="module")
def selection_only(tmp_path_factory):
    """The selection-only preset's study, built once: its organisms and its verdicts."""
    spec, root = preset("selection_only"), tmp_path_factory.mktemp("selection-only")
    found = verdicts(spec, root)
    return spec, Store.open(root).read_table("organisms"), found


def test_calibration_makes_stable_and_fragile_organisms_comparably_strong(selection_only):
    spec, table, _ = selection_only
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
    assert stable["stability"] > 0 > fragile["stability"]
    assert stable["misbehaving_entropy"] < fragile["misbehaving_entropy"]


def test_selection_only_world_attributes_the_change_to_selection(selection_only):
    _, _, found = selection_only
    # Planted: confidence prefers the stable sycophantic form (up) and the aligned answer
    # over thirty fragile variants (down); candidates are the organism's own samples.
    assert found["sycophancy"]["total"] > 0 and found["reward_hacking"]["total"] < 0, found
    for behaviour, row in found.items():
        assert row["attributed_to"] == "selection", (behaviour, row["reason"])


@pytest.mark.xfail(
    reason="measured (issue 19): with the knobs swapped, fragile sycophancy goes down only "
    "by -0.02 (interval includes 0; selection +0.05, label shift -0.07) and the stable "
    "reward-hacking organism is barely stable (stability -0.03 to +0.12 nats, entropy "
    "0.2-0.9) so confidence hardly prefers the keyword six times: total +0.02, selection "
    "-0.05, no attribution",
    strict=True,
)
def test_swapping_the_stability_knobs_swaps_the_signs(tmp_path):
    behaviours = preset_data("selection_only")["behaviours"]
    stable, fragile = (b["toyworld"]["n_variants"] for b in behaviours)
    behaviours[0]["toyworld"] = {**behaviours[0]["toyworld"], "n_variants": fragile}
    behaviours[1]["toyworld"] = {**behaviours[1]["toyworld"], "n_variants": stable}
    swapped = preset("selection_only", behaviours=behaviours)
    found = verdicts(swapped, tmp_path)
    # Now reward hacking has the one fixed form (the keyword six times, longer than the
    # aligned answer) and sycophancy thirty variants: the signs, and what carries them,
    # follow the knob.
    assert found["reward_hacking"]["total"] > 0 and found["sycophancy"]["total"] < 0, found
    for behaviour, row in found.items():
        assert row["attributed_to"] == "selection", (behaviour, row["reason"])


def test_shift_only_world_attributes_the_change_to_label_shift(tmp_path):
    found = verdicts(preset("shift_only"), tmp_path)
    # Planted: both of self_refinement's candidates are aligned for a fragile organism, so
    # the pick does not matter; training on them washes the misbehaviour out.
    for behaviour, row in found.items():
        assert row["total"] < 0, (behaviour, row)
        assert row["attributed_to"] == "label_shift", (behaviour, row["reason"])
