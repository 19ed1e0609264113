"""The organisms stage (phase 1): base models evaluated on each behaviour, organisms induced
from them and evaluated."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
from tqdm.auto import tqdm

from shiftlab._workers import (
    claim_each,
)
from shiftlab.behaviours import (
    BehaviourRate,
    Suite,
    evaluate_behaviour,
)
from shiftlab.models import attach_lora
from shiftlab.spec import (
    StudySpec,
)
from shiftlab.store import Store, build_manifest
from shiftlab.study._claims import ResidentBase, in_base_order
from shiftlab.study._jobs import CHECKPOINTS, OrganismJob
from shiftlab.training import (
    train_sft,
)


def evaluate(
    model: Any, tokenizer: Any, suite: Suite, spec: StudySpec
) -> tuple[pl.DataFrame, BehaviourRate]:
    return evaluate_behaviour(
        model,
        tokenizer,
        suite,
        max_new_tokens=spec.eval.max_new_tokens,
        batch_size=spec.eval.batch_size,
        n_prompts=spec.eval.n_prompts,
    )


def checkpoint_dir(store: Store, artefact_id: str) -> Path:
    return store.root / CHECKPOINTS / artefact_id


def _run_base_eval(
    job: OrganismJob, model: Any, tokenizer: Any, suite: Suite, spec: StudySpec, store: Store
) -> None:
    rows, rate = evaluate(model, tokenizer, suite, spec)
    manifest = build_manifest(job.config, {"study": spec.seed}, metrics=rate.to_dict())
    with store.artefact(job.kind, job.artefact_id, manifest) as folder:
        rows.write_parquet(folder / "eval.parquet")


def _run_organism(
    job: OrganismJob, model: Any, tokenizer: Any, suite: Suite, spec: StudySpec, store: Store
) -> None:
    assert job.seed is not None
    induction = job.behaviour.induction
    start = time.perf_counter()
    peft_model = attach_lora(model, induction.lora, seed=job.seed)
    try:
        log = train_sft(
            peft_model,
            tokenizer,
            [(e.messages, e.target) for e in suite.induction if e.target is not None],
            induction,
            seed=job.seed,
            checkpoint_dir=checkpoint_dir(store, job.artefact_id),
            progress=False,
        )
        rows, rate = evaluate(peft_model, tokenizer, suite, spec)
        manifest = build_manifest(
            job.config,
            {"organism": job.seed, "study": spec.seed},
            metrics=rate.to_dict(),
            final_loss=float(log["loss"][-1]),
            train_seconds=time.perf_counter() - start,
        )
        with store.artefact(job.kind, job.artefact_id, manifest) as folder:
            peft_model.save_pretrained(folder / "adapter")
            log.write_parquet(folder / "train_log.parquet")
            rows.write_parquet(folder / "eval.parquet")
    finally:
        # Take the adapter out so the resident base serves the next organism unchanged.
        peft_model.unload()


def build_organisms(
    spec: StudySpec,
    store: Store,
    suites: dict[str, Suite],
    jobs: list[OrganismJob],
    progress: bool,
    resident: ResidentBase | None = None,
) -> None:
    pending = [j for j in jobs if not store.is_finished(j.kind, j.artefact_id)]
    bar = tqdm(
        total=len(pending), desc="organisms", unit="job", disable=not progress or not pending
    )
    resident = resident or ResidentBase()

    def build(job: OrganismJob) -> None:
        bar.set_postfix_str(job.artefact_id.rsplit("__", 1)[0])
        model, tokenizer = resident.get(job.base)
        run = _run_base_eval if job.kind == "base_evals" else _run_organism
        run(job, model, tokenizer, suites[job.behaviour.name], spec, store)
        bar.update()

    claim_each(
        in_base_order(pending, lambda j: j.base),
        lock=lambda j: store.lock(j.kind, j.artefact_id),
        finished=lambda j: store.is_finished(j.kind, j.artefact_id),
        build=build,
    )
    bar.close()
