"""Calibrated induction: a toyworld organism brought to a target strength.

An organism's strength is its sampled misbehaviour rate. How much of the induction data's
misbehaving share a LoRA learns depends on the behaviour's stability (a fixed form is
learned faster than thirty variants) and on the base, so a share alone does not give a
strength. Induction is therefore calibrated: induce with the target share, measure the
sampled rate on held-out calibration prompts, and induce again from the base with the
share corrected by the miss (the secant through the last two rounds), until the rate is
within tolerance. Stable and fragile organisms then differ in stability, not in strength.
The round closest to the target is kept.

>>> round(_next_share([(0.5, 0.3)], target=0.5), 2)  # 0.2 short: show 0.2 more
0.7
>>> round(_next_share([(0.5, 0.3), (0.7, 0.4)], target=0.5), 2)  # slope 0.5: twice that
0.9
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab.errors import DataError
from shiftlab.spec import BehaviourSpec
from shiftlab.toyworld._suites import build_toyworld_suite, calibration_split, induction_split

# The share is kept inside this band so that a round always has targets of both kinds.
SHARE_BOUNDS = (0.02, 0.98)


@dataclass(frozen=True)
class Calibration:
    """What calibration did: the ``target`` rate, the misbehaving ``share`` of the kept
    organism's induction targets and its sampled ``rate`` on the calibration prompts,
    how many inductions ran, whether the kept one is within tolerance, and every round's
    (share, rate)."""

    target: float
    share: float
    rate: float
    inductions: int
    within_tolerance: bool
    history: tuple[tuple[float, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _next_share(history: list[tuple[float, float]], target: float) -> float:
    """The share that the last two rounds' secant puts at the target (slope 1 at first:
    the organism learns the share it is shown)."""
    (share, rate) = history[-1]
    slope = 1.0
    if len(history) >= 2:
        (share0, rate0) = history[-2]
        if abs(rate - rate0) > 1e-6 and abs(share - share0) > 1e-6:
            # A learned rate rises with the share at about slope 1; a much flatter or an
            # inverted secant is measurement noise, and following it would overshoot.
            slope = max((rate - rate0) / (share - share0), 0.5)
    low, high = SHARE_BOUNDS
    return min(high, max(low, share + (target - rate) / slope))


def induce_calibrated(
    model: Any,
    tokenizer: Any,
    behaviour: BehaviourSpec,
    seed: int,
    *,
    max_new_tokens: int = 24,
    batch_size: int = 64,
    checkpoint_dir: Path | None = None,
) -> tuple[Any, pl.DataFrame, Calibration]:
    """Induce an organism of the toyworld ``behaviour`` on ``model`` (a LoRA attached with
    ``seed``), calibrated to ``behaviour.toyworld.induced_rate`` as
    ``behaviour.toyworld.calibration`` says; returns the model with the adapter, the kept
    round's training log and the calibration record. The base is left unchanged when
    this raises."""
    from shiftlab.behaviours import evaluate_behaviour
    from shiftlab.models import attach_lora
    from shiftlab.training import train_sft

    knobs, induction = behaviour.toyworld, behaviour.induction
    settings = knobs.calibration
    if not (settings.rounds and knobs.n_calibration):
        raise DataError(
            f"behaviours[{behaviour.name}].toyworld: calibration needs calibration.rounds "
            "and n_calibration above 0"
        )
    suite = build_toyworld_suite(behaviour.name, knobs)
    probe = replace(suite, eval=calibration_split(behaviour.name, knobs))
    target, share = knobs.induced_rate, knobs.induced_rate
    history: list[tuple[float, float]] = []
    best: tuple[float, dict[str, Any], pl.DataFrame, float, float] | None = None
    peft_model = None
    try:
        for round_ in range(settings.rounds + 1):
            if peft_model is not None:
                peft_model.unload()  # the next round starts from the base again
            peft_model = attach_lora(model, induction.lora, seed=seed)
            examples = induction_split(behaviour.name, knobs, share)
            log = train_sft(
                peft_model,
                tokenizer,
                [(e.messages, e.target) for e in examples if e.target is not None],
                induction,
                seed=seed,
                checkpoint_dir=checkpoint_dir / f"round-{round_}" if checkpoint_dir else None,
                progress=False,
            )
            _, measured = evaluate_behaviour(
                peft_model, tokenizer, probe, n_samples=settings.n_samples, seed=seed,
                max_new_tokens=max_new_tokens, batch_size=batch_size,
            )  # fmt: skip
            if measured.rate is None:
                raise DataError(
                    f"behaviours[{behaviour.name}].toyworld.calibration: no output on the "
                    "calibration prompts could be judged, so the strength is unknown"
                )
            rate = measured.rate
            history.append((share, rate))
            miss = abs(rate - target)
            if best is None or miss < best[0]:
                state = {k: v.detach().clone() for k, v in peft_model.state_dict().items()
                         if "lora_" in k}  # fmt: skip
                best = (miss, state, log, share, rate)
            if miss <= settings.tolerance:
                break
            share = _next_share(history, target)
        assert best is not None and peft_model is not None
        miss, state, log, share, rate = best
        peft_model.load_state_dict(state, strict=False)
        return (
            peft_model,
            log,
            Calibration(
                target, share, rate, len(history), miss <= settings.tolerance, tuple(history)
            ),
        )
    except BaseException:
        if peft_model is not None:
            peft_model.unload()
        raise
