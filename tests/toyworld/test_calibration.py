"""Calibrated induction: rounds, the share update and the kept round."""

from dataclasses import replace

import pytest
import torch

from shiftlab.behaviours import evaluate_behaviour
from shiftlab.errors import DataError
from shiftlab.spec import BehaviourSpec
from shiftlab.toyworld import build_toyworld_suite, calibration_split, induce_calibrated
from shiftlab.toyworld._calibration import SHARE_BOUNDS, _next_share


def test_the_share_moves_by_the_miss_then_along_the_secant():
    assert _next_share([(0.5, 0.3)], 0.5) == pytest.approx(0.7)
    # Two rounds: rate rose 0.2 for 0.2 of share at first, so the slope is 1.
    assert _next_share([(0.5, 0.3), (0.7, 0.5)], 0.6) == pytest.approx(0.8)
    # A shallow secant (the rate barely moved) is floored so a round cannot overshoot far.
    assert _next_share([(0.5, 0.40), (0.6, 0.42)], 0.5) == pytest.approx(0.6 + 0.08 / 0.5)
    assert _next_share([(0.9, 0.1)], 0.9) == SHARE_BOUNDS[1]
    assert _next_share([(0.1, 0.9)], 0.1) == SHARE_BOUNDS[0]


def test_the_kept_round_is_the_one_recorded_and_the_base_is_left_alone(toy):
    model, tok = toy
    behaviour = BehaviourSpec.model_validate({
        "name": "sycophancy",
        "toyworld": {"n_induction": 96, "n_calibration": 12, "induced_rate": 0.5,
                     # A tolerance no 10-step organism meets: every round runs.
                     "calibration": {"rounds": 1, "tolerance": 1e-6, "n_samples": 2}},
        "induction": {"steps": 10, "learning_rate": 1e-2, "batch_size": 16},
    })  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    organism, log, calibration = induce_calibrated(model, tok, behaviour, 0, max_new_tokens=12)
    try:
        assert calibration.inductions == len(calibration.history) == 2
        assert calibration.target == 0.5 and not calibration.within_tolerance
        assert SHARE_BOUNDS[0] <= calibration.share <= SHARE_BOUNDS[1]
        assert (calibration.share, calibration.rate) in calibration.history
        assert min(abs(r - 0.5) for _, r in calibration.history) == abs(calibration.rate - 0.5)
        assert log.height == 10
        # The returned adapter is the kept round's: measuring it again gives its rate.
        suite = build_toyworld_suite("sycophancy", behaviour.toyworld)
        probe = replace(suite, eval=calibration_split("sycophancy", behaviour.toyworld))
        _, again = evaluate_behaviour(organism, tok, probe, n_samples=2, seed=0, max_new_tokens=12)
        assert again.rate == calibration.rate
    finally:
        organism.unload()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_calibration_without_rounds_is_a_clear_error(toy):
    model, tok = toy
    behaviour = BehaviourSpec.model_validate({"name": "sycophancy"})
    with pytest.raises(DataError, match=r"behaviours\[sycophancy\]\.toyworld: calibration needs"):
        induce_calibrated(model, tok, behaviour, 0)
