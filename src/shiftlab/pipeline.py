"""The study pipeline. Phase 1: induce organisms from base models and evaluate both.

Every stage reads finished artefacts and writes new ones keyed by a content hash of what
they depend on, so a finished artefact is never recomputed and a killed study resumes.

>>> import tempfile
>>> from shiftlab.spec import parse_spec
>>> spec = parse_spec({
...     "base_models": [{"name": "toy", "path": "toyworld:small"}],
...     "behaviours": [{"name": "sycophancy", "toyworld": {"n_eval": 16},
...                     "induction": {"steps": 20}}],
...     "organisms": {"seeds": [0]},
... })
>>> table = run_study(spec, Store.open(tempfile.mkdtemp()), progress=False)
>>> table.columns[:4]
['organism_id', 'base_model', 'behaviour', 'seed']
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl
from tqdm.auto import tqdm

from shiftlab import __version__
from shiftlab._hashing import content_hash
from shiftlab.behaviours import BehaviourRate, Suite, evaluate_behaviour, load_suite
from shiftlab.errors import ShiftlabError
from shiftlab.models import attach_lora, load_causal_lm, model_identity
from shiftlab.spec import BaseModelSpec, BehaviourSpec, StudySpec
from shiftlab.store import Store, build_manifest
from shiftlab.training import TRAINER_VERSION, train_sft

ORGANISM_TABLE = "organisms"


@dataclass(frozen=True)
class Job:
    """One artefact to build: a base-model evaluation (seed None) or an organism."""

    kind: str
    artefact_id: str
    base: BaseModelSpec
    behaviour: BehaviourSpec
    seed: int | None
    config: dict[str, Any]


def _short(value: Any) -> str:
    return content_hash(value, 10)


def plan_phase1(spec: StudySpec, suites: dict[str, Suite]) -> list[Job]:
    """Every base evaluation and organism the spec asks for, with its content-hashed id."""
    jobs = []
    for base in spec.base_models:
        identity = model_identity(base.path, revision=base.revision, gguf_file=base.gguf_file)
        for behaviour in spec.behaviours:
            common = {
                "shiftlab": __version__,
                "trainer": TRAINER_VERSION,
                "base": base.model_dump(),
                "base_identity": identity,
                "suite": suites[behaviour.name].fingerprint,
                # The eval batch size changes speed, not results.
                "eval": spec.eval.model_dump(exclude={"batch_size"}),
            }
            jobs.append(
                Job(
                    "base_evals",
                    f"{base.name}__{behaviour.name}__{_short(common)}",
                    base,
                    behaviour,
                    None,
                    common,
                )
            )
            for seed in spec.organisms.seeds:
                config = {**common, "induction": behaviour.induction.model_dump(), "seed": seed}
                jobs.append(
                    Job(
                        "organisms",
                        f"{base.name}__{behaviour.name}__s{seed}__{_short(config)}",
                        base,
                        behaviour,
                        seed,
                        config,
                    )
                )
    return jobs


def _evaluate(
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


def _run_base_eval(
    job: Job, model: Any, tokenizer: Any, suite: Suite, spec: StudySpec, store: Store
) -> None:
    rows, rate = _evaluate(model, tokenizer, suite, spec)
    manifest = build_manifest(job.config, {"study": spec.seed}, metrics=rate.to_dict())
    with store.artefact(job.kind, job.artefact_id, manifest) as folder:
        rows.write_parquet(folder / "eval.parquet")


def _run_organism(
    job: Job, model: Any, tokenizer: Any, suite: Suite, spec: StudySpec, store: Store
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
            progress=False,
        )
        rows, rate = _evaluate(peft_model, tokenizer, suite, spec)
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


def _by_base(jobs: list[Job]) -> Iterator[tuple[BaseModelSpec, list[Job]]]:
    order: dict[str, list[Job]] = {}
    for job in jobs:
        order.setdefault(job.base.name, []).append(job)
    for group in order.values():
        yield group[0].base, group


def organism_table(store: Store, jobs: list[Job]) -> pl.DataFrame:
    """One row per organism: its base's and its own behaviour rates with 95% CIs."""
    base_rates = {
        (j.base.name, j.behaviour.name): store.read_manifest(j.kind, j.artefact_id)["metrics"]
        for j in jobs
        if j.kind == "base_evals"
    }
    rows = []
    for job in jobs:
        if job.kind != "organisms":
            continue
        metrics = store.read_manifest(job.kind, job.artefact_id)["metrics"]
        base = base_rates[(job.base.name, job.behaviour.name)]
        rows.append(
            {
                "organism_id": job.artefact_id,
                "base_model": job.base.name,
                "behaviour": job.behaviour.name,
                "seed": job.seed,
                "base_rate": base["rate"],
                "base_ci_low": base["ci_low"],
                "base_ci_high": base["ci_high"],
                "organism_rate": metrics["rate"],
                "ci_low": metrics["ci_low"],
                "ci_high": metrics["ci_high"],
                "n_eval": metrics["n"],
                "n_unparseable": metrics["n_unparseable"],
            }
        )
    return pl.DataFrame(rows, infer_schema_length=None)


def run_study(spec: StudySpec, store: Store, *, progress: bool = True) -> pl.DataFrame:
    """Run every unfinished stage of ``spec`` into ``store``; return the organism table.

    Finished artefacts are skipped without loading any model, so rerunning a finished
    study only reads manifests.
    """
    suites = load_suites(spec)
    jobs = plan_phase1(spec, suites)
    store.write_study(spec.to_yaml(), {"study": spec.seed})
    pending = [j for j in jobs if not store.is_finished(j.kind, j.artefact_id)]
    bar = tqdm(total=len(pending), desc="phase 1", unit="job", disable=not progress or not pending)
    for base, group in _by_base(pending):
        model, tokenizer = load_causal_lm(
            base.path,
            revision=base.revision,
            gguf_file=base.gguf_file,
            dtype=base.dtype,
            trust_remote_code=base.trust_remote_code,
        )
        for job in group:
            bar.set_postfix_str(job.artefact_id.rsplit("__", 1)[0])
            with store.lock(job.kind, job.artefact_id):
                if not store.is_finished(job.kind, job.artefact_id):
                    run = _run_base_eval if job.kind == "base_evals" else _run_organism
                    run(job, model, tokenizer, suites[job.behaviour.name], spec, store)
            bar.update()
    bar.close()
    table = organism_table(store, jobs)
    store.write_table(ORGANISM_TABLE, table)
    return table


def load_suites(spec: StudySpec) -> dict[str, Suite]:
    """Every behaviour's suite, checked to be runnable before any model is loaded."""
    suites: dict[str, Suite] = {}
    for i, behaviour in enumerate(spec.behaviours):
        suite = load_suite(behaviour)
        if suite.scorer is None:
            raise ShiftlabError(
                f"behaviours[{i}] ({behaviour.name} from {behaviour.source}): scoring rules for "
                "real-data suites are not implemented yet, so it cannot be evaluated"
            )
        suites[behaviour.name] = suite
    return suites


def study_status(store: Store, spec: StudySpec) -> pl.DataFrame:
    """One row per planned artefact: ``stage, artefact_id, finished``."""
    jobs = plan_phase1(spec, load_suites(spec))
    return pl.DataFrame(
        {
            "stage": [j.kind for j in jobs],
            "artefact_id": [j.artefact_id for j in jobs],
            "finished": [store.is_finished(j.kind, j.artefact_id) for j in jobs],
        }
    )
