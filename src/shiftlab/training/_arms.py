"""Many arms of one organism on one resident base model.

Each arm starts from a fresh copy of the organism adapter and a fresh optimiser, so the
result equals training every arm in its own process, without reloading the base. Arms
whose batches allow it train together, their adapters stacked (:mod:`._stacked`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab.models import load_lora
from shiftlab.spec import TrainingSpec
from shiftlab.training._loop import Encoded, Objective, _trainable, restore_trainable, train
from shiftlab.training._stacked import ArmPlan, stack_budget, stack_refusal, train_stacked


@dataclass(frozen=True)
class ArmJob:
    """One arm to train: its name, encoded data, objective and seed."""

    name: str
    data: Sequence[Encoded]
    objective: Objective = "sft"
    seed: int = 0


def stacks(plans: Sequence[ArmPlan], budget: int) -> list[list[ArmPlan]]:
    """Consecutive arms grouped so that a group's largest stacked micro-batch stays within
    ``budget`` tokens (an arm larger than that trains alone)."""
    groups: list[list[ArmPlan]] = []
    used = 0
    for plan in plans:
        tokens = plan.largest_micro_tokens
        if groups and used + tokens <= budget:
            groups[-1].append(plan)
            used += tokens
        else:
            groups.append([plan])
            used = tokens
    return groups


def _groups(jobs: Sequence[ArmJob], planned: dict[str, ArmPlan], budget: int) -> list[list[ArmJob]]:
    """Each run of consecutive planned (stackable) jobs in stacks, every other job alone;
    the jobs' order is kept."""
    by_name = {job.name: job for job in jobs}
    groups: list[list[ArmJob]] = []
    run: list[ArmPlan] = []
    for job in [*jobs, None]:
        if job is not None and job.name in planned:
            run.append(planned[job.name])
            continue
        groups += [[by_name[p.name] for p in stack] for stack in stacks(run, budget)]
        run = []
        if job is not None:
            groups.append([job])
    return groups


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
    finished: Collection[str] = (),
    stack_tokens: int | None = None,
) -> dict[str, pl.DataFrame]:
    """Train each job from the organism adapter at ``adapter_dir``; return each arm's log.

    ``on_done(job, peft_model, log)`` is called after each arm, in the order of ``jobs``,
    while its weights are loaded (save or evaluate there). ``model`` is left without the
    adapter afterwards. With ``checkpoint_root`` (and ``config.checkpoint_every``) each arm
    checkpoints into ``checkpoint_root/<arm name>`` and resumes from there.

    Consecutive SFT arms of a plain LoRA adapter train together, stacked, as long as a
    stack's largest micro-batch holds at most ``stack_tokens`` tokens (None: the model's
    :func:`~shiftlab.training.stack_budget`; 0: every arm alone; a BCT or ACT arm always
    trains alone, between the stacks around it); a stacked arm
    follows its lone trajectory up to float rounding. Jobs named in ``finished`` (already
    stored) train only inside a stack with jobs that are not, so that the stack computes
    what it computed in an uninterrupted run; they are never passed to ``on_done``.

    >>> from shiftlab.models import attach_lora, build_tiny_llama
    >>> from shiftlab.spec import LoraSpec, TrainingSpec
    >>> from shiftlab.toyworld import build_tokenizer
    >>> from shiftlab.training import encode_sft
    >>> import tempfile
    >>> tok = build_tokenizer()
    >>> model = build_tiny_llama(len(tok))
    >>> folder = tempfile.mkdtemp()
    >>> organism = attach_lora(model, LoraSpec(r=4))
    >>> organism.save_pretrained(folder)
    >>> model = organism.unload()
    >>> data = encode_sft(tok, [([{"role": "user", "content": "hi ."}], "the sky is blue .")], 64)
    >>> config = TrainingSpec(steps=3, learning_rate=1e-2, batch_size=1, warmup_steps=0)
    >>> logs = train_arms(model, tok, folder, [ArmJob("a", data), ArmJob("b", data, seed=1)],
    ...                   config, progress=False)
    >>> sorted(logs), logs["a"].height
    (['a', 'b'], 3)
    """
    peft_model = load_lora(model, str(adapter_dir), trainable=True)
    trainable = _trainable(peft_model)
    initial = {n: p.detach().clone() for n, p in trainable.items()}
    stackable = stack_refusal(peft_model, ["sft"], config) is None
    # Planned (ordered and packed) once: the plans size the stacks and feed them.
    planned = {
        j.name: ArmPlan.of(j.name, j.data, config, j.seed)
        for j in jobs
        if stackable and j.objective == "sft"
    }
    if stack_tokens is None and planned:
        stack_tokens = stack_budget(model, max(p.widest_row for p in planned.values()))
    groups = _groups(jobs, planned, stack_tokens or 0)
    logs = {}
    try:
        for group in groups:
            if all(job.name in finished for job in group):
                continue
            restore_trainable(trainable, initial)
            if len(group) == 1:
                (job,) = group
                trained = {job.name: _train_alone(peft_model, tokenizer, job, config,
                                                  checkpoint_root, progress)}  # fmt: skip
                weights = None
            else:
                arms = [planned[j.name] for j in group]
                trained, weights = train_stacked(
                    peft_model, tokenizer, arms, config, progress=progress
                )
            for job in group:
                if job.name in finished:
                    continue
                if weights is not None:
                    restore_trainable(
                        trainable, {n: weights[job.name][id(p)] for n, p in trainable.items()}
                    )
                logs[job.name] = trained[job.name]
                if on_done is not None:
                    on_done(job, peft_model, logs[job.name])
    finally:
        peft_model.unload()
    return logs


def _train_alone(
    peft_model: Any,
    tokenizer: Any,
    job: ArmJob,
    config: TrainingSpec,
    checkpoint_root: str | Path | None,
    progress: bool,
) -> pl.DataFrame:
    return train(
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
