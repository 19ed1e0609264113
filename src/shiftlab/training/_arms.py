"""Many arms of one organism on one resident base model.

Each arm starts from a fresh copy of the organism adapter and a fresh optimiser, so the
result equals training every arm in its own process, without reloading the base.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab.models import load_lora
from shiftlab.spec import TrainingSpec
from shiftlab.training._loop import Encoded, Objective, _trainable, restore_trainable, train


@dataclass(frozen=True)
class ArmJob:
    """One arm to train: its name, encoded data, objective and seed."""

    name: str
    data: Sequence[Encoded]
    objective: Objective = "sft"
    seed: int = 0


def train_arms(
    model: Any,
    tokenizer: Any,
    adapter_dir: str | Path,
    jobs: Sequence[ArmJob],
    config: TrainingSpec,
    *,
    on_done: Callable[[ArmJob, Any, pl.DataFrame], None] | None = None,
    checkpoint_root: str | Path | None = None,
    progress: bool = True,
) -> dict[str, pl.DataFrame]:
    """Train each job from the organism adapter at ``adapter_dir``; return each arm's log.

    ``on_done(job, peft_model, log)`` is called after each arm, while its weights are
    loaded (save or evaluate there). ``model`` is left without the adapter afterwards.
    With ``checkpoint_root`` (and ``config.checkpoint_every``) each arm checkpoints into
    ``checkpoint_root/<arm name>`` and resumes from there.
    """
    peft_model = load_lora(model, str(adapter_dir), trainable=True)
    trainable = _trainable(peft_model)
    initial = {n: p.detach().clone() for n, p in trainable.items()}
    logs = {}
    try:
        for job in jobs:
            restore_trainable(trainable, initial)
            logs[job.name] = train(
                peft_model,
                tokenizer,
                job.data,
                config,
                objective=job.objective,
                seed=job.seed,
                checkpoint_dir=Path(checkpoint_root) / job.name if checkpoint_root else None,
                progress=progress,
                desc=f"arm {job.name}",
            )
            if on_done is not None:
                on_done(job, peft_model, logs[job.name])
    finally:
        peft_model.unload()
    return logs
