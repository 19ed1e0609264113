"""The organisms stage (phase 1): base models evaluated on each behaviour, organisms induced
from them and evaluated."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from tqdm.auto import tqdm

from shiftlab._workers import (
    claim_each,
)
from shiftlab.behaviours import (
    BehaviourRate,
    CapabilityScore,
    Suite,
    evaluate_behaviour,
    evaluate_capability,
    sampled_strength,
    stability,
)
from shiftlab.models import attach_lora
from shiftlab.spec import (
    BaseModelSpec,
    StudySpec,
)
from shiftlab.store import Store, build_manifest
from shiftlab.study._claims import ResidentBase, in_base_order
from shiftlab.study._jobs import CHECKPOINTS, OrganismJob
from shiftlab.study._suites import capability_suite
from shiftlab.toyworld import induce_calibrated
from shiftlab.training import (
    train_sft,
)


@dataclass(frozen=True)
class Evaluation:
    """One model's evaluation: the behaviour's eval rows and headline, and the capability
    suite's rows and accuracy, scored on the same weights."""

    rows: pl.DataFrame
    rate: BehaviourRate
    capability_rows: pl.DataFrame
    capability: CapabilityScore

    def manifest_fields(self) -> dict[str, Any]:
        """What the artefact's manifest records of it."""
        return {"metrics": self.rate.to_dict(), "capability": self.capability.to_dict()}

    def write(self, folder: Path) -> None:
        self.rows.write_parquet(folder / "eval.parquet")
        self.capability_rows.write_parquet(folder / CAPABILITY_ROWS)


CAPABILITY_ROWS = "capability.parquet"


def behaviour_rows(
    model: Any, tokenizer: Any, suite: Suite, spec: StudySpec, n_samples: int | None = None
) -> tuple[pl.DataFrame, BehaviourRate]:
    """The eval split scored the way ``spec.eval`` defines the headline rate (or sampled
    ``n_samples`` times per prompt), with the study's seed: before and after share noise."""
    return evaluate_behaviour(
        model,
        tokenizer,
        suite,
        max_new_tokens=spec.eval.max_new_tokens,
        batch_size=spec.eval.batch_size,
        n_prompts=spec.eval.n_prompts,
        n_samples=spec.eval.n_samples if n_samples is None else n_samples,
        seed=spec.seed,
    )


def evaluate(
    model: Any, tokenizer: Any, suite: Suite, spec: StudySpec, base: BaseModelSpec
) -> Evaluation:
    """Score the behaviour (the headline rate) and the capability suite of ``base`` on
    ``model``."""
    rows, rate = behaviour_rows(model, tokenizer, suite, spec)
    capability_rows, capability = evaluate_capability(
        model, tokenizer, capability_suite(spec.eval.capability, base.path),
        batch_size=spec.eval.batch_size,
    )  # fmt: skip
    return Evaluation(rows, rate, capability_rows, capability)


def measure_strength(
    model: Any, tokenizer: Any, suite: Suite, spec: StudySpec, headline: pl.DataFrame
) -> tuple[pl.DataFrame | None, dict[str, Any]]:
    """An organism's strength (sampled rate with a prompt-clustered interval) and the
    stability of its misbehaviour, from ``spec.eval.strength_samples`` temperature-1
    samples per eval prompt (the headline rows when they are those samples). Returns the
    sampled rows (None when they are the headline's, or when nothing is measured) and
    the two measurements."""
    judged = suite.scorer is not None and suite.scorer.needs_judge(suite.eval)
    k = spec.eval.strength_samples_for(judged=judged)
    if k == 0:
        return None, {}
    same = spec.eval.n_samples == k
    rows = headline if same else behaviour_rows(model, tokenizer, suite, spec, n_samples=k)[0]
    examples = suite.eval[: spec.eval.n_prompts] if spec.eval.n_prompts else suite.eval
    measured = {
        "strength": sampled_strength(rows).to_dict(),
        "stability": stability(
            model, tokenizer, examples, rows, batch_size=spec.eval.batch_size
        ).to_dict(),
    }
    return (None if same else rows), measured


def checkpoint_dir(store: Store, artefact_id: str) -> Path:
    return store.root / CHECKPOINTS / artefact_id


def _run_base_eval(
    job: OrganismJob, model: Any, tokenizer: Any, suite: Suite, spec: StudySpec, store: Store
) -> None:
    evaluation = evaluate(model, tokenizer, suite, spec, job.base)
    manifest = build_manifest(job.config, {"study": spec.seed}, **evaluation.manifest_fields())
    with store.artefact(job.kind, job.artefact_id, manifest) as folder:
        evaluation.write(folder)


def _run_organism(
    job: OrganismJob, model: Any, tokenizer: Any, suite: Suite, spec: StudySpec, store: Store
) -> None:
    assert job.seed is not None
    induction = job.behaviour.induction
    start = time.perf_counter()
    calibrated = job.behaviour.is_toyworld and job.behaviour.toyworld.calibration.rounds > 0
    measured: dict[str, Any] = {}
    if calibrated:
        # Re-induced until its sampled rate reaches the target (toyworld's knobs say how).
        peft_model, log, calibration = induce_calibrated(
            model, tokenizer, job.behaviour, job.seed,
            max_new_tokens=spec.eval.max_new_tokens, batch_size=spec.eval.batch_size,
            checkpoint_dir=checkpoint_dir(store, job.artefact_id),
        )  # fmt: skip
        measured["calibration"] = calibration.to_dict()
    else:
        peft_model = attach_lora(model, induction.lora, seed=job.seed)
    try:
        if not calibrated:
            log = train_sft(
                peft_model,
                tokenizer,
                [(e.messages, e.target) for e in suite.induction if e.target is not None],
                induction,
                seed=job.seed,
                checkpoint_dir=checkpoint_dir(store, job.artefact_id),
                progress=False,
            )
        evaluation = evaluate(peft_model, tokenizer, suite, spec, job.base)
        sampled, strength = measure_strength(peft_model, tokenizer, suite, spec, evaluation.rows)
        measured |= strength
        manifest = build_manifest(
            job.config,
            {"organism": job.seed, "study": spec.seed},
            **evaluation.manifest_fields(),
            references=suite.references,
            **measured,
            final_loss=float(log["loss"][-1]),
            train_seconds=time.perf_counter() - start,
        )
        with store.artefact(job.kind, job.artefact_id, manifest) as folder:
            peft_model.save_pretrained(folder / "adapter")
            log.write_parquet(folder / "train_log.parquet")
            evaluation.write(folder)
            if sampled is not None:
                sampled.write_parquet(folder / "eval_sampled.parquet")
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
