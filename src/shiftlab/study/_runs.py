"""The runs stage (phase 3): each organism's arms trained on its resident base, evaluated and
stored."""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from tqdm.auto import tqdm

from shiftlab._hashing import content_hash
from shiftlab.behaviours import (
    Suite,
)
from shiftlab.spec import (
    StudySpec,
    TrainingSpec,
)
from shiftlab.store import Store, build_manifest
from shiftlab.study._claims import ResidentBase, claim_by_organism, grouped
from shiftlab.study._jobs import CHECKPOINTS, RunJob, RunPlan
from shiftlab.study._organisms import evaluate
from shiftlab.training import (
    ArmJob,
    encode_pairs,
    encode_sft,
    train_arms,
)


def build_runs(
    spec: StudySpec,
    store: Store,
    suites: dict[str, Suite],
    plan: RunPlan,
    progress: bool,
    resident: ResidentBase | None = None,
    only: Collection[str] | None = None,
) -> None:
    """Train, evaluate and store the plan's runs that ``store`` lacks (of those in ``only``,
    when given: the plan's other runs then train only as stack-mates, never stored)."""
    pending = [
        j
        for j in plan.jobs.values()
        if (only is None or j.run_id in only) and not store.is_finished("runs", j.run_id)
    ]
    bar = tqdm(total=len(pending), desc="runs", unit="run", disable=not progress or not pending)
    resident = resident or ResidentBase()
    # Every run of an organism, stored or not: its arms train stacked, and a resumed
    # organism stacks what an uninterrupted one did (see ``train_arms``' ``finished``).
    by_organism = grouped(plan.jobs.values(), lambda j: j.organism.artefact_id)

    def build(organism_id: str, group_jobs: list[RunJob]) -> None:
        jobs = by_organism[organism_id]
        train_runs(
            spec,
            store,
            suites[jobs[0].organism.behaviour.name],
            resident.get(jobs[0].organism.base),
            store.verified("organisms", organism_id, "adapter"),
            jobs,
            bar,
            finished={
                j.run_id
                for j in jobs
                if (only is not None and j.run_id not in only)
                or store.is_finished("runs", j.run_id)
            },
        )

    claim_by_organism(store, "runs", pending, lambda j: j.organism, lambda j: j.run_id, build)
    bar.close()


def train_runs(
    spec: StudySpec,
    store: Store,
    suite: Suite,
    base: tuple[Any, Any],
    adapter_dir: Path,
    jobs: Sequence[RunJob],
    bar: Any,
    finished: Collection[str] = (),
) -> None:
    """Train, evaluate and store runs of one organism on its resident ``base``; runs in
    ``finished`` (already stored) train only where they share a stack with others.

    Each run trains with the training settings in its own ``config`` (what its manifest
    records), so a run can be re-executed from its manifest alone.
    """
    model, tokenizer = base
    by_training = grouped(jobs, lambda j: content_hash(j.config["training"]))
    for group in by_training.values():
        config = TrainingSpec.model_validate(group[0].config["training"])
        arm_jobs = []
        for job in group:
            data: Sequence[Any] = (
                encode_pairs(
                    tokenizer,
                    [(p.clean, p.wrapped, p.target or "") for p in job.pairs],
                    config.max_length,
                )
                if job.pairs
                else encode_sft(tokenizer, job.examples, config.max_length)
            )
            arm_jobs.append(ArmJob(job.run_id, data, job.objective, job.seed))
        save = functools.partial(
            _save_run, store, spec, suite, tokenizer, {j.run_id: j for j in group}, bar
        )
        train_arms(
            model,
            tokenizer,
            adapter_dir,
            arm_jobs,
            config,
            on_done=save,
            checkpoint_root=store.root / CHECKPOINTS,
            progress=False,
            finished=finished,
        )


def _save_run(
    store: Store,
    spec: StudySpec,
    suite: Suite,
    tokenizer: Any,
    jobs: dict[str, RunJob],
    bar: Any,
    arm: ArmJob,
    peft_model: Any,
    log: pl.DataFrame,
) -> None:
    """Evaluate a trained arm while its weights are loaded and store it as a run."""
    job = jobs[arm.name]
    evaluation = evaluate(peft_model, tokenizer, suite, spec, job.organism.base)
    manifest = build_manifest(
        job.config,
        {"run": job.seed, "study": spec.seed},
        **evaluation.manifest_fields(),
        n_train=job.n_train,
        final_loss=float(log["loss"][-1]),
    )
    with store.lock("runs", job.run_id):
        if not store.is_finished("runs", job.run_id):
            with store.artefact("runs", job.run_id, manifest) as folder:
                peft_model.save_pretrained(folder / "adapter")
                log.write_parquet(folder / "train_log.parquet")
                evaluation.write(folder)
                _targets_frame(job).write_parquet(folder / "targets.parquet")
    bar.update()


def _targets_frame(job: RunJob) -> pl.DataFrame:
    """The run's training data (last user turn, target): what shift compares with the organism."""
    data = [(p.wrapped, p.target) for p in job.pairs] or list(job.examples)
    return pl.DataFrame(
        [(messages[-1]["content"], target) for messages, target in data],
        schema={"prompt": pl.String, "target": pl.String},
        orient="row",
    )
