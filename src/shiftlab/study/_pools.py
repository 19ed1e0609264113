"""The pools stage (phase 2): every label method's candidates for each organism, scored and
chosen."""

from __future__ import annotations

import shutil
from typing import Any

import polars as pl
from tqdm.auto import tqdm

from shiftlab._hashing import content_hash
from shiftlab.behaviours import (
    Suite,
)
from shiftlab.consistency import (
    CandidateScorer,
    PoolContext,
    check_pool,
    iter_pool,
    make_scorer,
    resolve_prompts,
)
from shiftlab.models import load_lora
from shiftlab.spec import (
    ScorerSpec,
    StudySpec,
)
from shiftlab.store import Store, build_manifest, temporary_sibling
from shiftlab.study._claims import ResidentBase, claim_by_organism
from shiftlab.study._jobs import PoolJob
from shiftlab.study._plan import max_new_tokens_of


def _write_pool(store: Store, job: PoolJob, ctx: PoolContext, scorer_name: str | None) -> None:
    manifest = build_manifest(
        job.config, {"study": job.config["seed"]}, scorer=scorer_name, method=job.method.name
    )
    with store.artefact("pools", job.artefact_id, manifest) as target:
        # Chunks go to part files, then one streaming sink: memory stays bounded. The parts
        # folder is a temporary of the pool's own path, so a killed build's is swept later.
        parts = temporary_sibling(store.path("pools", job.artefact_id))
        parts.mkdir()
        try:
            for i, frame in enumerate(iter_pool(job.method, ctx)):
                frame.write_parquet(parts / f"part-{i:05d}.parquet")
            pool = pl.scan_parquet(parts / "*.parquet")
            check_pool(pool, job.artefact_id)
            pool.sink_parquet(target)
        finally:
            shutil.rmtree(parts, ignore_errors=True)


def _toyworld_resolved(scorer: ScorerSpec) -> ScorerSpec:
    """Kind ``toyworld`` as the reward-model folder toyworld ships."""
    if scorer.kind != "toyworld":
        return scorer
    from shiftlab.toyworld import toyworld_reward_model_dir

    folder = str(toyworld_reward_model_dir(progress=False))
    return scorer.model_copy(update={"kind": "reward_model", "path": folder})


def _scorer_for(
    job: PoolJob, suite: Suite, organism: Any, tokenizer: Any, cache: dict[str, Any]
) -> CandidateScorer | None:
    """The pool's scorer; one that does not judge with the organism is loaded once."""
    method = job.method
    if not method.uses_scorer and method.scorer is None:
        return None
    prompts = resolve_prompts(method, suite)
    named = method.scorer or ScorerSpec()
    if named.kind == "self":
        return make_scorer(named, prompts, organism=organism, tokenizer=tokenizer)
    key = content_hash({"scorer": method.scorer and method.scorer.model_dump(), "prompts": prompts})
    if key not in cache:
        cache[key] = make_scorer(_toyworld_resolved(named), prompts)
    scorer: CandidateScorer = cache[key]
    return scorer


def build_pools(
    spec: StudySpec,
    store: Store,
    suites: dict[str, Suite],
    jobs: list[PoolJob],
    progress: bool,
    resident: ResidentBase | None = None,
) -> None:
    pending = [j for j in jobs if not store.is_finished("pools", j.artefact_id)]
    bar = tqdm(total=len(pending), desc="pools", unit="pool", disable=not progress or not pending)
    scorers: dict[str, Any] = {}
    resident = resident or ResidentBase()

    def build(organism_id: str, pool_jobs: list[PoolJob]) -> None:
        model, tokenizer = resident.get(pool_jobs[0].organism.base)
        organism = load_lora(model, str(store.verified("organisms", organism_id, "adapter")))
        try:
            # The organism's claim keeps other workers out; a pool finished before it
            # was claimed (a resumed study) needs no scorer and no generation.
            todo = [j for j in pool_jobs if not store.is_finished("pools", j.artefact_id)]
            for job in todo:
                bar.set_postfix_str(f"{organism_id.rsplit('__', 1)[0]} {job.method.name}")
                suite = suites[job.organism.behaviour.name]
                scorer = _scorer_for(job, suite, organism, tokenizer, scorers)
                ctx = PoolContext(
                    organism,
                    tokenizer,
                    suite,
                    seed=spec.seed,
                    max_new_tokens=max_new_tokens_of(spec, job.method),
                    batch_size=spec.runs.generation_batch_size,
                    scorer=scorer,
                )
                _write_pool(store, job, ctx, scorer.name if scorer else None)
                bar.update()
        finally:
            organism.unload()

    claim_by_organism(store, "pools", pending, lambda j: j.organism, lambda j: j.artefact_id, build)
    bar.close()
