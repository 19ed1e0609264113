"""The planted-mechanism presets: toyworld studies whose true cause is known, and what the
attribution (the additive decomposition and its organism-level sign-flip verdicts) finds
in them. Slow: each builds a study of 12 calibrated organisms (36 for the paper regime)
and their runs."""

from __future__ import annotations

from importlib import resources
from typing import Any

import polars as pl
import pytest
import yaml

from shiftlab.attribution import attribute, decompose, sign_tests
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


def assert_calibrated(spec: StudySpec, table: pl.DataFrame) -> None:
    """Each organism's calibration record is honest, and nearly all reached the target.

    The rate each round measures has a standard error of about 0.03 (32 prompts x 8
    samples), so a round can miss a tolerance of 0.05 by chance: `calibrated` says so,
    the round kept is the closest, and at most one organism in ten may end outside."""
    target = {b.name: b.toyworld for b in spec.behaviours}
    for row in table.iter_rows(named=True):
        knobs = target[row["behaviour"]]
        off = abs(row["calibration_rate"] - knobs.induced_rate)
        assert row["calibrated"] == (off <= knobs.calibration.tolerance), row
        # The strength on the eval prompts is a second, independent measurement, within
        # the calibration's own error plus its interval's full width (about 4 standard
        # errors).
        width = row["strength_ci_high"] - row["strength_ci_low"]
        assert abs(row["strength"] - knobs.induced_rate) <= off + width, row
    assert table["calibrated"].mean() >= 0.9, table.filter(~pl.col("calibrated"))


def test_calibration_makes_stable_and_fragile_organisms_comparably_strong(selection_only):
    spec, table, _ = selection_only
    assert table.height == 12
    assert_calibrated(spec, table)
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


def test_swapping_the_stability_knobs_swaps_the_signs(tmp_path):
    behaviours = preset_data("selection_only")["behaviours"]
    stable, fragile = (b["toyworld"]["n_variants"] for b in behaviours)
    behaviours[0]["toyworld"] = {**behaviours[0]["toyworld"], "n_variants": fragile}
    behaviours[1]["toyworld"] = {**behaviours[1]["toyworld"], "n_variants": stable}
    swapped = preset("selection_only", behaviours=behaviours)
    found = verdicts(swapped, tmp_path)
    # Now reward hacking has the one fixed form (the keyword five times, twice as long as
    # the aligned answer, so confidence prefers it) and sycophancy thirty variants: the
    # signs follow the knob, each a clear change, and selection carries the larger part.
    # (Training on a fragile organism's own samples sheds some of its misbehaviour too, so
    # label shift may be credited beside selection there.)
    assert found["reward_hacking"]["total"] > 0 and found["sycophancy"]["total"] < 0, found
    for behaviour, row in found.items():
        assert row["attributed_to"] in ("selection", "both"), (behaviour, row["reason"])
        assert abs(row["selection"]) > abs(row["label_shift"]), row


def assert_label_shift_carries(row: dict[str, Any]) -> None:
    """A suppression carried by label shift: where the candidates never differ, full and
    shuffled are the same runs (no selection step; selection exactly 0); otherwise label
    shift is credited, and is the larger part."""
    assert row["total"] < 0 and row["label_shift_ci_high"] < 0, row
    if row["reason"].startswith("no selection step"):
        assert row["selection"] == 0 and row["total"] == row["label_shift"], row
    else:
        assert row["attributed_to"] in ("label_shift", "both"), row
        assert abs(row["label_shift"]) > abs(row["selection"]), row


def test_shift_only_world_attributes_the_change_to_label_shift(tmp_path):
    design = run_study(preset("shift_only"), Store.open(tmp_path), progress=False, workers=2)
    found = attribute(decompose(design).filter(method="self_confidence"))
    # Planted: the candidates are (almost) the organism's greedy answer, aligned for a
    # fragile organism, so the pick does not matter; training on them washes it out.
    for behaviour in ("reward_hacking", "emergent_misalignment"):
        row = found.filter(behaviour=behaviour).row(0, named=True)
        assert_label_shift_carries(row)


def test_paper_regime_gives_the_papers_sign_pattern_and_its_causes(tmp_path):
    # The paper preset at 3 bases x 3 seeds (36 organisms), with its confidence method,
    # whose candidates are the organism's samples at temperature 0.5: sharpening leaves a
    # stable organism's two modes about where they were and turns a fragile one's mode
    # (the aligned answer) into most of the labels.
    data = preset_data("paper")
    confidence = next(m for m in data["methods"] if m["name"] == "self_confidence")
    spec = preset("paper", organisms={"seeds": [0, 1, 2]}, methods=[confidence],
                  arms=["full", "shuffled", "none"])  # fmt: skip
    design = run_study(spec, Store.open(tmp_path), progress=False, workers=2)
    organisms = Store.open(tmp_path).read_table("organisms")
    assert organisms.height == 36
    assert_calibrated(spec, organisms)
    signs = sign_tests(design).filter(analysis="sign_test_by_method")
    share_down = dict(signs.select("behaviour", "estimate").iter_rows())
    # Sycophancy up in most moved organisms, reward hacking and emergent misalignment
    # down in most.
    assert share_down["sycophancy"] < 0.5 < share_down["reward_hacking"], signs
    assert share_down["emergent_misalignment"] > 0.5, signs
    # Selection carries the amplification of the stable one, label shift the suppression
    # of the fragile ones.
    found = attribute(decompose(design).filter(method="self_confidence"))
    row = found.filter(behaviour="sycophancy").row(0, named=True)
    assert row["total"] > 0 and row["attributed_to"] in ("selection", "both"), row
    assert row["selection"] > abs(row["label_shift"]), row
    for behaviour in ("reward_hacking", "emergent_misalignment"):
        assert_label_shift_carries(found.filter(behaviour=behaviour).row(0, named=True))
