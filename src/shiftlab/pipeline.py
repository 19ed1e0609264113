"""The study pipeline: organisms (phase 1), pools (phase 2), arms and runs (phase 3).

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

import functools
import itertools
import math
import re
import shutil
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
from tqdm.auto import tqdm

from shiftlab._hashing import content_hash, file_hash
from shiftlab._version import __version__
from shiftlab._workers import (
    WorkerError,
    WorkerPool,
    claim_each,
    single_thread_on_cpu,
)
from shiftlab.behaviours import (
    SCORING_VERSION,
    SUITE_SOURCES,
    BehaviourRate,
    PairExample,
    Suite,
    evaluate_behaviour,
    load_suite,
    make_judge,
)
from shiftlab.chat import Message
from shiftlab.consistency import (
    SCORE_BASED,
    CandidateScorer,
    PoolContext,
    build_arm,
    check_pool,
    iter_pool,
    make_scorer,
    resolve_prompts,
)
from shiftlab.errors import DataError, ShiftlabError, SpecError, StoreError
from shiftlab.executors import StageJob, check_executor, run_stage_graph
from shiftlab.judges import Judge
from shiftlab.models import attach_lora, load_causal_lm, load_lora, model_identity
from shiftlab.spec import (
    LABEL_METHODS,
    PAIRED_METHODS,
    BaseModelSpec,
    BehaviourSpec,
    MethodSpec,
    ScorerSpec,
    StudySpec,
    TrainingSpec,
)
from shiftlab.store import ORGANISM_TABLE, RUNS_TABLE, Store, build_manifest, temporary_sibling
from shiftlab.training import (
    TRAINER_VERSION,
    ArmJob,
    encode_pairs,
    encode_sft,
    train_arms,
    train_sft,
)
from shiftlab.training._loop import Objective

T = TypeVar("T")
# Training checkpoints of unfinished organisms and runs (``checkpoint_every``).
CHECKPOINTS = ".checkpoints"


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
                "scoring": SCORING_VERSION,
                # Which judge scored the outputs; its concurrency and timeouts do not matter.
                "judge": behaviour.judge
                and behaviour.judge.model_dump(include={"kind", "path", "base_url", "model"}),
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


def _checkpoints(store: Store, artefact_id: str) -> Path:
    return store.root / CHECKPOINTS / artefact_id


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
            checkpoint_dir=_checkpoints(store, job.artefact_id),
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


def _grouped(items: Iterable[T], key: Callable[[T], str]) -> dict[str, list[T]]:
    """Items by key, in first-seen order (jobs sharing a base model or an organism)."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


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


def _load_base(base: BaseModelSpec) -> tuple[Any, Any]:
    return load_causal_lm(
        base.path,
        revision=base.revision,
        gguf_file=base.gguf_file,
        dtype=base.dtype,
        trust_remote_code=base.trust_remote_code,
    )


# Names that mark a chat-tuned checkpoint: "...-Instruct", "...-chat", "gemma-2b-it".
_INSTRUCT = re.compile(r"instruct|chat|(^|[-_/])it($|[-_/])", re.IGNORECASE)


def base_model_facts(spec: StudySpec) -> pl.DataFrame:
    """Moderators of each base model: ``base_model, instruct, n_params, log10_params``.

    ``instruct`` is read from the model's name or the last part of its path; ``n_params``
    is counted on the loaded model (each base is loaded once, on CPU; pass moderators of
    your own to skip it). Analyses join on ``base_model``.
    """
    rows = []
    for base in spec.base_models:
        model, _ = _load_base(base)
        n_params = sum(p.numel() for p in model.parameters())
        del model
        instruct = bool(_INSTRUCT.search(base.name) or _INSTRUCT.search(Path(base.path).name))
        rows.append((base.name, instruct, n_params, math.log10(n_params)))
    return pl.DataFrame(
        rows,
        schema={"base_model": pl.String, "instruct": pl.Boolean, "n_params": pl.Int64,
                "log10_params": pl.Float64},
        orient="row",
    )  # fmt: skip


class _Resident:
    """The base model a worker holds; another is loaded only when a job needs it."""

    def __init__(self) -> None:
        self._name: str | None = None
        self._loaded: tuple[Any, Any] | None = None

    def get(self, base: BaseModelSpec) -> tuple[Any, Any]:
        # The whole spec, not the name: two studies may give one name to different bases.
        key = content_hash(base.model_dump())
        if self._loaded is None or self._name != key:
            self._loaded = None  # let the old base go before the next one loads
            self._loaded = _load_base(base)
            self._name = key
        return self._loaded


def _in_base_order(jobs: Iterable[T], base: Callable[[T], BaseModelSpec]) -> list[T]:
    """Jobs grouped by base model (first-seen order), so a worker loads each base once."""
    return [j for group in _grouped(jobs, lambda j: base(j).name).values() for j in group]


def run_study(
    spec: StudySpec,
    store: Store,
    *,
    progress: bool = True,
    workers: int = 1,
    executor: str | None = None,
) -> pl.DataFrame:
    """Run every unfinished stage of ``spec`` into ``store``; return the design table
    (``tables/runs.parquet``), or the organism table when the spec has no methods.

    Phases: 1 organisms (and base evaluations), 2 candidate pools, 3 arms trained and
    evaluated, 4 shift of each run from its organism (``spec.shift``). Finished
    artefacts are skipped without loading any model, so rerunning a finished study only
    reads manifests. ``workers`` > 1 builds the study in that many processes
    that claim jobs through the store (see :func:`shiftlab._workers.claim_each`); the
    tables are the same for any number of workers. ``executor`` (default
    ``spec.executor.kind``) ``submitit`` or ``ray`` runs the stage graph there instead
    (see :mod:`shiftlab.executors`).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    kind = executor or spec.executor.kind
    check_executor(kind)
    suites = load_suites(spec, store)
    store.write_study(spec.to_yaml(), {"study": spec.seed})
    store.sweep_leases()
    if kind != "local":
        run_on_executor(spec, store, suites, kind, progress)
        plan = _plan(spec, store, suites)
    elif workers == 1:
        with single_thread_on_cpu():
            plan = _build_study(spec, store, suites, progress)
    else:
        plan = _build_with_workers(spec, store, suites, workers, progress)
    store.sweep_leases()
    table = organism_table(store, plan_phase1(spec, suites))
    store.write_table(ORGANISM_TABLE, table)
    if plan is None:
        return table
    design = design_table(store, plan, table, shift_table(store, plan_shift(spec, plan)))
    store.write_table(RUNS_TABLE, design)
    return design


def _build_study(
    spec: StudySpec, store: Store, suites: dict[str, Suite], progress: bool
) -> RunPlan | None:
    """Build phases 1-3 in this process, claiming each job; the run plan, if any."""
    jobs = plan_phase1(spec, suites)
    resident = _Resident()  # one base model held across the phases
    _run_phase1(spec, store, suites, jobs, progress, resident)
    if not spec.methods:
        return None
    organisms = [j for j in jobs if j.kind == "organisms"]
    pools = plan_pools(spec, organisms)
    _run_phase2(spec, store, suites, pools, progress, resident)
    plan = plan_runs(spec, store, suites, organisms, pools)
    _run_phase3(spec, store, suites, plan, progress, resident)
    _run_phase4(spec, store, plan_shift(spec, plan), progress, resident)
    return plan


def _plan(spec: StudySpec, store: Store, suites: dict[str, Suite]) -> RunPlan | None:
    """The run plan of a study whose pools are finished (None without methods)."""
    if not spec.methods:
        return None
    organisms = [j for j in plan_phase1(spec, suites) if j.kind == "organisms"]
    return plan_runs(spec, store, suites, organisms, plan_pools(spec, organisms))


def _study_worker(spec: StudySpec, root: str) -> None:
    store = Store.open(root)
    _build_study(spec, store, load_suites(spec, store), progress=False)


def _build_with_workers(
    spec: StudySpec, store: Store, suites: dict[str, Suite], workers: int, progress: bool
) -> RunPlan | None:
    """Build the study in ``workers`` processes while this one follows their progress."""
    jobs = plan_phase1(spec, suites)
    plan = None
    with WorkerPool(workers, _study_worker, (spec, str(store.root))) as pool:
        _follow(pool, store, "phase 1", "job", [(j.kind, j.artefact_id) for j in jobs], progress)
        if spec.methods:
            organisms = [j for j in jobs if j.kind == "organisms"]
            pools = plan_pools(spec, organisms)
            _follow(
                pool, store, "phase 2", "pool", [("pools", p.artefact_id) for p in pools], progress
            )
            plan = plan_runs(spec, store, suites, organisms, pools)
            _follow(pool, store, "phase 3", "run", [("runs", i) for i in plan.jobs], progress)
            shift = [("shift", j.artefact_id) for j in plan_shift(spec, plan)]
            _follow(pool, store, "phase 4", "run", shift, progress)
        pool.join()
    return plan


# -- the stage graph (executors) -----------------------------------------------------------

STAGES = ("organisms", "pools", "runs", "shift")


def stage_graph(spec: StudySpec, suites: dict[str, Suite]) -> list[StageJob]:
    """Every unit of the study and what each waits for: a phase-1 artefact (stage
    ``organisms``, base evaluations too), or one organism's pools (waiting for the
    organism), runs (for its pools) or shift (for its runs); other organisms need not be
    finished."""
    jobs = plan_phase1(spec, suites)
    graph = [StageJob("organisms", j.artefact_id) for j in jobs]
    if not spec.methods:
        return graph
    for job in (j for j in jobs if j.kind == "organisms"):
        key = job.artefact_id
        graph.append(StageJob("pools", key, (f"organisms:{key}",)))
        graph.append(StageJob("runs", key, (f"pools:{key}",)))
        if spec.shift.measure:
            graph.append(StageJob("shift", key, (f"runs:{key}",)))
    return graph


def stage_job_finished(
    spec: StudySpec, store: Store, suites: dict[str, Suite], job: StageJob, phase1: dict[str, Job]
) -> bool:
    """True when every artefact of ``job`` is finished (reads manifests only);
    ``phase1`` maps the study's phase-1 artefact ids to their jobs."""
    if job.stage == "organisms":
        return store.is_finished(phase1[job.key].kind, job.key)
    organism = [phase1[job.key]]
    pools = plan_pools(spec, organism)
    if not all(store.is_finished("pools", p.artefact_id) for p in pools):
        return False
    if job.stage == "pools":
        return True
    plan = plan_runs(spec, store, suites, organism, pools)
    if not all(store.is_finished("runs", r) for r in plan.jobs):
        return False
    shift = plan_shift(spec, plan) if job.stage == "shift" else []
    return all(store.is_finished("shift", j.artefact_id) for j in shift)


# The base model an executor's worker process keeps between the jobs it runs.
_WORKER_BASE = _Resident()


def build_stage_job(spec: StudySpec, root: str, stage: str, key: str) -> str | None:
    """Build one unit of the stage graph into the store at ``root`` (what an executor's
    worker runs). Returns None, or the message of an input error, which executors
    re-raise as such on the submitting side. Finished artefacts are skipped; artefacts
    are claimed through the store's leases, so a unit redone after its worker died does
    not repeat what that worker finished."""
    try:
        store = Store.open(root)
        suites = load_suites(spec, store)
        phase1 = {j.artefact_id: j for j in plan_phase1(spec, suites)}
        if key not in phase1:
            raise ShiftlabError(f"{stage}:{key}: no such unit in this study")
        with single_thread_on_cpu():
            if stage == "organisms":
                _run_phase1(spec, store, suites, [phase1[key]], False, _WORKER_BASE)
                return None
            organism = [phase1[key]]
            pools = plan_pools(spec, organism)
            if stage == "pools":
                _run_phase2(spec, store, suites, pools, False, _WORKER_BASE)
                return None
            plan = plan_runs(spec, store, suites, organism, pools)
            if stage == "runs":
                _run_phase3(spec, store, suites, plan, False, _WORKER_BASE)
            elif stage == "shift":
                _run_phase4(spec, store, plan_shift(spec, plan), False, _WORKER_BASE)
            else:
                raise ShiftlabError(f"unknown stage {stage!r}; expected one of {STAGES}")
    except ShiftlabError as error:
        return f"{type(error).__name__}: {error}"
    return None


def run_on_executor(
    spec: StudySpec, store: Store, suites: dict[str, Suite], kind: str, progress: bool = True
) -> None:
    """Build the study's stage graph on the ``kind`` executor (submitit or ray)."""
    phase1 = {j.artefact_id: j for j in plan_phase1(spec, suites)}
    run_stage_graph(
        stage_graph(spec, suites),
        build=build_stage_job,
        args=(spec, str(store.root.resolve())),
        finished=lambda job: stage_job_finished(spec, store, suites, job, phase1),
        config=spec.executor,
        store=store,
        kind=kind,
        progress=progress,
    )


# How often the process that follows workers reads their progress from the store.
FOLLOW_SECONDS = 1.0


def _follow(
    pool: WorkerPool,
    store: Store,
    desc: str,
    unit: str,
    artefacts: list[tuple[str, str]],
    progress: bool,
) -> None:
    """Show one phase's progress, read from the store, until its artefacts are finished."""
    pending = [a for a in artefacts if not store.is_finished(*a)]
    total = len(pending)
    with tqdm(total=total, desc=desc, unit=unit, disable=not progress or not pending) as bar:
        while pending:
            running = pool.check()
            pending = [a for a in pending if not store.is_finished(*a)]
            bar.update(total - len(pending) - bar.n)
            if pending and not running:
                raise WorkerError(f"{desc}: the workers stopped with {len(pending)} {unit}s left")
            time.sleep(FOLLOW_SECONDS)


def _run_phase1(
    spec: StudySpec,
    store: Store,
    suites: dict[str, Suite],
    jobs: list[Job],
    progress: bool,
    resident: _Resident | None = None,
) -> None:
    pending = [j for j in jobs if not store.is_finished(j.kind, j.artefact_id)]
    bar = tqdm(total=len(pending), desc="phase 1", unit="job", disable=not progress or not pending)
    resident = resident or _Resident()

    def build(job: Job) -> None:
        bar.set_postfix_str(job.artefact_id.rsplit("__", 1)[0])
        model, tokenizer = resident.get(job.base)
        run = _run_base_eval if job.kind == "base_evals" else _run_organism
        run(job, model, tokenizer, suites[job.behaviour.name], spec, store)
        bar.update()

    claim_each(
        _in_base_order(pending, lambda j: j.base),
        lock=lambda j: store.lock(j.kind, j.artefact_id),
        finished=lambda j: store.is_finished(j.kind, j.artefact_id),
        build=build,
    )
    bar.close()


JUDGE_CACHE = "cache/judge.sqlite"


def load_suites(spec: StudySpec, store: Store | None = None) -> dict[str, Suite]:
    """Every behaviour's suite, checked to be runnable before any model is loaded.

    A behaviour with a ``judge`` gets it (built on first use), its replies cached in the
    store's ``cache/judge.sqlite``; one whose rules need a judge and has none is refused.
    """
    suites: dict[str, Suite] = {}
    judges: dict[str, Judge] = {}
    for i, behaviour in enumerate(spec.behaviours):
        where = f"behaviours[{i}] ({behaviour.name} from {behaviour.source})"
        try:
            suite = load_suite(behaviour)
        except DataError as error:
            if behaviour.source not in SUITE_SOURCES.names():
                raise
            # A generated suite's errors are about its knobs: name the spec field.
            raise SpecError(f"behaviours[{i}].{error}") from None
        if not any(e.target is not None for e in suite.induction):
            raise ShiftlabError(
                f"{where}: no induction rows with targets, so no organism can be induced "
                "(an eval-only suite can be scored with shiftlab.behaviours.evaluate_behaviour)"
            )
        if behaviour.judge is not None:
            key = content_hash(behaviour.judge.model_dump())
            if key not in judges:  # behaviours that name the same judge share it (and its model)
                cache = store.root / JUDGE_CACHE if store is not None else None
                judges[key] = make_judge(behaviour.judge, cache)
            suite = replace(suite, judge=judges[key])
        elif suite.scorer is not None and suite.scorer.needs_judge(suite.eval):
            raise ShiftlabError(
                f"{where}: its scoring rules ask a judge; set behaviours[{i}].judge "
                "(kind: http with base_url and model, or kind: local with path)"
            )
        suites[behaviour.name] = suite
    return suites


def study_status(
    store: Store, spec: StudySpec, damaged: Collection[tuple[str, str]] = ()
) -> pl.DataFrame:
    """One row per planned artefact: ``stage, artefact_id, finished``; an artefact in
    ``damaged`` (kind, id) counts as not finished.

    Runs can only be listed once every pool is finished (their data come from the pools).
    """
    suites = load_suites(spec)
    jobs = plan_phase1(spec, suites)
    stages = [(j.kind, j.artefact_id) for j in jobs]
    organisms = [j for j in jobs if j.kind == "organisms"]
    pools = plan_pools(spec, organisms) if spec.methods else []
    stages += [("pools", p.artefact_id) for p in pools]

    def finished(kind: str, artefact_id: str) -> bool:
        return (kind, artefact_id) not in damaged and store.is_finished(kind, artefact_id)

    if pools and all(finished("pools", p.artefact_id) for p in pools):
        plan = plan_runs(spec, store, suites, organisms, pools)
        stages += [("runs", run_id) for run_id in plan.jobs]
        stages += [("shift", j.artefact_id) for j in plan_shift(spec, plan)]
    return pl.DataFrame(
        {
            "stage": [kind for kind, _ in stages],
            "artefact_id": [artefact_id for _, artefact_id in stages],
            "finished": [finished(kind, artefact_id) for kind, artefact_id in stages],
        }
    )


# -- phase 2: pools ---------------------------------------------------------------------


@dataclass(frozen=True)
class PoolJob:
    """One pool to build: an organism's candidates under one label method."""

    artefact_id: str
    organism: Job
    method: MethodSpec
    config: dict[str, Any]


def _pool_methods(spec: StudySpec) -> list[MethodSpec]:
    """The label methods whose pools the study needs; the relabeled arm needs greedy labels."""
    methods = [m for m in spec.methods if m.name in LABEL_METHODS]
    if "relabeled" in spec.arms and all(m.name != "greedy_self_training" for m in methods):
        methods.append(MethodSpec(name="greedy_self_training"))
    return methods


def _max_new_tokens(spec: StudySpec, method: MethodSpec) -> int:
    return method.max_new_tokens or spec.eval.max_new_tokens


def plan_pools(spec: StudySpec, organisms: list[Job]) -> list[PoolJob]:
    """Every (organism, label method) pool, with a content-hashed id."""
    jobs = []
    for organism in organisms:
        for method in _pool_methods(spec):
            config = {
                "organism": organism.artefact_id,
                "method": method.model_dump(),
                "rubric": file_hash(Path(method.rubric)) if method.rubric else None,
                "max_new_tokens": _max_new_tokens(spec, method),
                "seed": spec.seed,
                "shiftlab": __version__,
            }
            artefact_id = f"{organism.artefact_id}__{method.name}__{_short(config)}"
            jobs.append(PoolJob(artefact_id, organism, method, config))
    return jobs


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


def _run_phase2(
    spec: StudySpec,
    store: Store,
    suites: dict[str, Suite],
    jobs: list[PoolJob],
    progress: bool,
    resident: _Resident | None = None,
) -> None:
    pending = [j for j in jobs if not store.is_finished("pools", j.artefact_id)]
    bar = tqdm(total=len(pending), desc="phase 2", unit="pool", disable=not progress or not pending)
    scorers: dict[str, Any] = {}
    resident = resident or _Resident()

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
                    max_new_tokens=_max_new_tokens(spec, job.method),
                    batch_size=spec.runs.generation_batch_size,
                    scorer=scorer,
                )
                _write_pool(store, job, ctx, scorer.name if scorer else None)
                bar.update()
        finally:
            organism.unload()

    _claim_by_organism(
        store, "pools", pending, lambda j: j.organism, lambda j: j.artefact_id, build
    )
    bar.close()


def _claim_by_organism(
    store: Store,
    kind: str,
    jobs: list[T],
    organism: Callable[[T], Job],
    artefact_id: Callable[[T], str],
    build: Callable[[str, list[T]], None],
) -> None:
    """Build ``jobs`` (artefacts of ``kind``) with one claim per organism: an organism's
    jobs share its loaded adapter, and ``build(organism_id, jobs)`` gets them together."""
    groups = _grouped(
        _in_base_order(jobs, lambda j: organism(j).base), lambda j: organism(j).artefact_id
    )
    claim_each(
        groups.items(),
        lock=lambda group: store.lock(kind, group[0]),
        finished=lambda group: all(store.is_finished(kind, artefact_id(j)) for j in group[1]),
        build=lambda group: build(*group),
    )


def read_pool(store: Store, pool_id: str) -> pl.DataFrame:
    """A finished pool from the store."""
    if not store.is_finished("pools", pool_id):
        raise StoreError(f"pool {pool_id} is not finished in {store.root}")
    return store.read_parquet("pools", pool_id)


# -- phase 3: arms and runs -------------------------------------------------------------


@dataclass(frozen=True)
class RunJob:
    """One phase-3 training run: an organism trained on one arm's data with one seed.

    ``config`` is everything the run is a function of (its id is a hash of it), except
    the training data itself, which it holds by hash.
    """

    run_id: str
    organism: Job
    objective: Objective
    seed: int
    config: dict[str, Any]
    examples: tuple[tuple[tuple[Message, ...], str], ...] = ()
    pairs: tuple[PairExample, ...] = ()

    @property
    def n_train(self) -> int:
        return len(self.examples) or len(self.pairs)


@dataclass(frozen=True)
class RunRow:
    """One row of the design table: which run (if any) a (method, arm, k, seed) cell uses."""

    organism: Job
    method: str
    arm: str
    k: int | None
    seed: int
    run: RunJob | None


@dataclass(frozen=True)
class RunPlan:
    """The design table's cells and the distinct runs (by id) behind them."""

    rows: list[RunRow]
    jobs: dict[str, RunJob]


def _arm_examples(suite: Suite, arm: pl.DataFrame) -> tuple[tuple[tuple[Message, ...], str], ...]:
    prompts = {e.id: e.messages for e in suite.consistency}
    return tuple(
        (tuple(prompts[pid]), target)
        for pid, target in zip(arm["prompt_id"], arm["target"], strict=True)
    )


def _cells(spec: StudySpec, method: MethodSpec) -> list[tuple[str, int | None]]:
    """The (arm, k) cells of a method: paired losses have only ``full`` and ``none``;
    score-based methods record their candidate count as k and add the k-scaling arms."""
    if method.name in PAIRED_METHODS:
        return [(arm, None) for arm in ("full", "none") if arm in spec.arms]
    if method.name not in SCORE_BASED:
        return [(arm, None) for arm in spec.arms]
    n = method.n_candidates
    cells: list[tuple[str, int | None]] = [
        (arm, n if arm in ("full", "shuffled") else None) for arm in spec.arms
    ]
    if "full" in spec.arms:
        cells += [("full", k) for k in method.k_values if k != n]
    return cells


def plan_runs(
    spec: StudySpec,
    store: Store,
    suites: dict[str, Suite],
    organisms: list[Job],
    pools: list[PoolJob],
) -> RunPlan:
    """Every design-table cell and the distinct runs behind them.

    Arms built from identical data share one run (``relabeled`` and ``original`` do not
    depend on the method, ``greedy_self_training``'s arms equal ``relabeled``).
    """
    pool_ids = {(p.organism.artefact_id, p.method.name): p.artefact_id for p in pools}
    read = functools.lru_cache(maxsize=None)(lambda pool_id: read_pool(store, pool_id))
    rows: list[RunRow] = []
    jobs: dict[str, RunJob] = {}

    def job_for(organism: Job, objective: Objective, seed: int, **data: Any) -> RunJob:
        config = {
            "organism": organism.artefact_id,
            "objective": objective,
            "seed": seed,
            "training": spec.runs.training.model_dump(),
            "trainer": TRAINER_VERSION,
            "eval": spec.eval.model_dump(exclude={"batch_size"}),
            "data": content_hash(
                [
                    data.get("examples", ()),
                    [(p.clean, p.wrapped, p.target) for p in data.get("pairs", ())],
                ]
            ),
        }
        run_id = f"{organism.artefact_id}__run-{_short(config)}"
        return jobs.setdefault(run_id, RunJob(run_id, organism, objective, seed, config, **data))

    for organism in organisms:
        suite = suites[organism.behaviour.name]
        pairs = tuple(p for p in suite.pairs if p.target is not None)
        for method, seed in itertools.product(spec.methods, spec.runs.seeds):
            for arm, k in _cells(spec, method):
                run = None
                if arm != "none" and method.name in PAIRED_METHODS:
                    if not pairs:
                        raise DataError(
                            f"{organism.behaviour.name}: {method.name} needs pairs with "
                            "targets; the suite's pairs have none"
                        )
                    objective: Objective = "bct" if method.name == "bct" else "act"
                    run = job_for(organism, objective, seed, pairs=pairs)
                elif arm != "none":
                    source = "greedy_self_training" if arm == "relabeled" else method.name
                    pool = read(pool_ids[(organism.artefact_id, source)])
                    examples = _arm_examples(suite, build_arm(pool, arm, seed=seed, k=k))
                    run = job_for(organism, "sft", seed, examples=examples) if examples else None
                rows.append(RunRow(organism, method.name, arm, k, seed, run))
    return RunPlan(rows, jobs)


def _run_phase3(
    spec: StudySpec,
    store: Store,
    suites: dict[str, Suite],
    plan: RunPlan,
    progress: bool,
    resident: _Resident | None = None,
) -> None:
    pending = [j for j in plan.jobs.values() if not store.is_finished("runs", j.run_id)]
    bar = tqdm(total=len(pending), desc="phase 3", unit="run", disable=not progress or not pending)
    resident = resident or _Resident()

    def build(organism_id: str, group_jobs: list[RunJob]) -> None:
        run_jobs = [j for j in group_jobs if not store.is_finished("runs", j.run_id)]
        train_runs(
            spec,
            store,
            suites[run_jobs[0].organism.behaviour.name],
            resident.get(run_jobs[0].organism.base),
            store.verified("organisms", organism_id, "adapter"),
            run_jobs,
            bar,
        )

    _claim_by_organism(store, "runs", pending, lambda j: j.organism, lambda j: j.run_id, build)
    bar.close()


def train_runs(
    spec: StudySpec,
    store: Store,
    suite: Suite,
    base: tuple[Any, Any],
    adapter_dir: Path,
    jobs: Sequence[RunJob],
    bar: Any,
) -> None:
    """Train, evaluate and store runs of one organism on its resident ``base``.

    Each run trains with the training settings in its own ``config`` (what its manifest
    records), so a run can be re-executed from its manifest alone.
    """
    model, tokenizer = base
    by_training = _grouped(jobs, lambda j: content_hash(j.config["training"]))
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
    rows, rate = _evaluate(peft_model, tokenizer, suite, spec)
    manifest = build_manifest(
        job.config,
        {"run": job.seed, "study": spec.seed},
        metrics=rate.to_dict(),
        n_train=job.n_train,
        final_loss=float(log["loss"][-1]),
    )
    with store.lock("runs", job.run_id):
        if not store.is_finished("runs", job.run_id):
            with store.artefact("runs", job.run_id, manifest) as folder:
                peft_model.save_pretrained(folder / "adapter")
                log.write_parquet(folder / "train_log.parquet")
                rows.write_parquet(folder / "eval.parquet")
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


# -- phase 4: shift ----------------------------------------------------------------------

# Bump when what a shift artefact holds, or how it is measured, changes.
SHIFT_VERSION = 2
# Texts embedded by (encoder, text), shared by every worker of a study.
EMBEDDING_CACHE = "cache/embeddings.sqlite"
SHIFT_COLUMNS = ("shift_kl", "shift_mmd", "shift_mmd_p", "shift_c2st_auc", "shift_energy")
OUTPUT_SHIFT_COLUMNS = ("output_shift_mmd", "output_shift_mmd_p", "output_shift_energy")


@dataclass(frozen=True)
class ShiftJob:
    """The shift of one run from its organism: its training targets against the organism's
    own samples on the same prompts, and its eval outputs against the organism's."""

    artefact_id: str
    run: RunJob
    samples_id: str
    config: dict[str, Any]


def _prompt_key(messages: Sequence[Message]) -> str:
    return content_hash(list(messages), 16)


def _training_items(job: RunJob) -> list[tuple[tuple[Message, ...], str]]:
    """A run's (prompt, target) examples; paired losses train on the wrapped prompts."""
    return [(p.wrapped, p.target or "") for p in job.pairs] or list(job.examples)


def _samples_config(spec: StudySpec, organism_id: str, keys: Sequence[str]) -> dict[str, Any]:
    return {
        "organism": organism_id,
        "prompts": content_hash(sorted(keys)),
        "temperature": spec.shift.temperature,
        "max_new_tokens": spec.shift.max_new_tokens or spec.eval.max_new_tokens,
        "seed": spec.seed,
        "shiftlab": __version__,
        "version": SHIFT_VERSION,
    }


def plan_shift(spec: StudySpec, plan: RunPlan) -> list[ShiftJob]:
    """One shift measurement per distinct run; each organism's own samples cover every
    prompt any of its runs trains on."""
    if not spec.shift.measure or not plan.jobs:
        return []
    from shiftlab.shift import encoder_identity

    encoder = encoder_identity(spec.encoder.path)
    by_organism = _grouped(plan.jobs.values(), lambda j: j.organism.artefact_id)
    jobs = []
    for organism_id, runs in by_organism.items():
        keys = {_prompt_key(m) for run in runs for m, _ in _training_items(run)}
        samples_config = _samples_config(spec, organism_id, sorted(keys))
        samples_id = f"{organism_id}__samples__{_short(samples_config)}"
        for run in runs:
            config = {
                "run": run.run_id,
                "samples": samples_id,
                "encoder": encoder,
                "shift": spec.shift.model_dump(exclude={"measure"}),
                "seed": spec.seed,
                "version": SHIFT_VERSION,
            }
            artefact_id = f"{run.run_id}__shift-{_short(config)}"
            jobs.append(ShiftJob(artefact_id, run, samples_id, config))
    return jobs


def _organism_samples(
    spec: StudySpec, store: Store, jobs: list[ShiftJob], organism: Any, tokenizer: Any
) -> dict[str, tuple[str, float, int]]:
    """The organism's own sample on each prompt its runs train on: prompt key -> (text,
    sequence NLL, tokens), built once per organism into ``samples/``."""
    from shiftlab.consistency import candidate_seed
    from shiftlab.generation import generate, score_continuations

    samples_id = jobs[0].samples_id
    if not store.is_finished("samples", samples_id):
        prompts = {_prompt_key(m): m for job in jobs for m, _ in _training_items(job.run)}
        keys = sorted(prompts)
        config = _samples_config(spec, jobs[0].run.organism.artefact_id, keys)
        generations = generate(
            organism,
            tokenizer,
            [prompts[k] for k in keys],
            max_new_tokens=config["max_new_tokens"],
            temperature=spec.shift.temperature,
            seeds=[candidate_seed(spec.seed, k, 0) for k in keys],
            batch_size=spec.runs.generation_batch_size,
        )
        texts = [g.text for g in generations]
        scored = score_continuations(
            organism, tokenizer, [prompts[k] for k in keys], texts,
            batch_size=spec.runs.generation_batch_size,
        )  # fmt: skip
        frame = pl.DataFrame(
            {
                "prompt_key": keys,
                "prompt": [prompts[k][-1]["content"] for k in keys],
                "text": texts,
                "nll": [-sum(s) for s in scored],
                "n_tokens": [len(s) for s in scored],
            }
        )
        manifest = build_manifest(config, {"study": spec.seed})
        with store.artefact("samples", samples_id, manifest) as path:
            frame.write_parquet(path)
    frame = store.read_parquet("samples", samples_id)
    return {
        key: (text, nll, n_tokens)
        for key, text, nll, n_tokens in frame.select("prompt_key", "text", "nll", "n_tokens").rows()
    }


class _ShiftMeter:
    """Measures runs of one organism while it is loaded; caches target NLLs across runs
    (arms share many targets) and embeddings across the study."""

    def __init__(
        self, spec: StudySpec, store: Store, organism: Any, tokenizer: Any, encoder: Any, scope: str
    ):
        from shiftlab.shift import EmbeddingCache

        self.spec, self.store, self.scope = spec, store, scope
        self.organism, self.tokenizer, self.encoder = organism, tokenizer, encoder
        self.cache = EmbeddingCache(store.root / EMBEDDING_CACHE)
        self.nll: dict[tuple[str, str], tuple[float, int]] = {}

    def score_targets(self, items: Sequence[tuple[tuple[Message, ...], str]]) -> None:
        """Score every (prompt, target) not scored yet, in one batched pass."""
        from shiftlab.generation import score_continuations

        missing = {(_prompt_key(m), t): (m, t) for m, t in items}
        missing = {k: item for k, item in missing.items() if k not in self.nll}
        if missing:
            scored = score_continuations(
                self.organism,
                self.tokenizer,
                [m for m, _ in missing.values()],
                [t for _, t in missing.values()],
                batch_size=self.spec.runs.generation_batch_size,
            )
            self.nll.update({k: (-sum(s), len(s)) for k, s in zip(missing, scored, strict=True)})

    def _target_nll(self, items: list[tuple[tuple[Message, ...], str]]) -> list[tuple[float, int]]:
        self.score_targets(items)
        return [self.nll[(_prompt_key(m), t)] for m, t in items]

    def _embed(self, texts: list[str]) -> Any:
        from shiftlab.shift import embed

        return embed(texts, self.encoder, self.cache, scope=self.scope)

    def embed_all(
        self,
        jobs: Sequence[ShiftJob],
        samples: dict[str, tuple[str, float, int]],
        before: pl.DataFrame,
    ) -> None:
        """Embed every text the organism's shift jobs compare, in one canonical pass
        (sorted, under the organism's scope): vectors then do not depend on which worker
        measured which run first, or on a resumed worker's batches."""
        texts = set(before["output"].to_list())
        for job in jobs:
            items = _training_items(job.run)
            texts.update(t for _, t in items)
            texts.update(samples[_prompt_key(m)][0] for m, _ in items)
            after = self.store.read_parquet("runs", job.run.run_id, "eval.parquet", ["output"])
            texts.update(after["output"].to_list())
        self._embed(sorted(texts))

    def measure(
        self, job: ShiftJob, samples: dict[str, tuple[str, float, int]], before: pl.DataFrame
    ) -> pl.DataFrame:
        from shiftlab.shift import LikelihoodShift, paired_shift

        settings = self.spec.shift
        items = _training_items(job.run)
        own = [samples[_prompt_key(m)] for m, _ in items]
        likelihood = LikelihoodShift.from_nll(
            self._target_nll(items), [(nll, n) for _, nll, n in own]
        )
        targets = [t for _, t in items]
        shift = paired_shift(
            self._embed(targets),
            self._embed([text for text, _, _ in own]),
            n_permutations=settings.n_permutations,
            n_folds=settings.classifier_folds,
            seed=self.spec.seed,
        )
        after = self.store.read_parquet("runs", job.run.run_id, "eval.parquet")
        outputs = before.select("sample_id", "output").join(
            after.select("sample_id", "output"),
            on="sample_id",
            suffix="_after",
            maintain_order="left",  # row order seeds the permutations
        )
        moved = paired_shift(
            self._embed(outputs["output"].to_list()),
            self._embed(outputs["output_after"].to_list()),
            n_permutations=settings.n_permutations,
            classifier=False,
            seed=self.spec.seed,
        )
        return pl.DataFrame(
            [
                {
                    "run_id": job.run.run_id,
                    "n": shift.n,
                    "target_nll": likelihood.target_nll,
                    "sample_nll": likelihood.sample_nll,
                    "shift_kl": likelihood.shift,
                    "shift_kl_per_token": likelihood.per_token,
                    "shift_mmd": shift.mmd,
                    "shift_mmd_p": shift.mmd_p,
                    "shift_c2st_auc": shift.c2st_auc,
                    "shift_energy": shift.energy,
                    "most_shifted_targets": [targets[i] for i in shift.most_shifted],
                    "output_n": moved.n,
                    "output_shift_mmd": moved.mmd,
                    "output_shift_mmd_p": moved.mmd_p,
                    "output_shift_energy": moved.energy,
                }
            ],
            schema_overrides={
                **{c: pl.Float64 for c in (*SHIFT_COLUMNS, *OUTPUT_SHIFT_COLUMNS)},
                "n": pl.Int64,
                "output_n": pl.Int64,
                # Empty when the run is too small for the probe; typed so frames concatenate.
                "most_shifted_targets": pl.List(pl.String),
            },
        )


def _run_phase4(
    spec: StudySpec,
    store: Store,
    jobs: list[ShiftJob],
    progress: bool,
    resident: _Resident | None = None,
) -> None:
    pending = [j for j in jobs if not store.is_finished("shift", j.artefact_id)]
    bar = tqdm(total=len(pending), desc="phase 4", unit="run", disable=not progress or not pending)
    resident = resident or _Resident()
    encoders: list[Any] = []  # loaded on first use, then kept

    every_job = _grouped(jobs, lambda j: j.run.organism.artefact_id)

    def build(organism_id: str, shift_jobs: list[ShiftJob]) -> None:
        from shiftlab.shift import TextEncoder

        # The organism's whole set, not just what is left: a resumed organism must sample
        # and embed exactly what an uninterrupted one does.
        shift_jobs = every_job[organism_id]
        if not encoders:
            encoders.append(TextEncoder(spec.encoder.path, batch_size=spec.encoder.batch_size))
        model, tokenizer = resident.get(shift_jobs[0].run.organism.base)
        organism = load_lora(model, str(store.verified("organisms", organism_id, "adapter")))
        try:
            samples = _organism_samples(spec, store, shift_jobs, organism, tokenizer)
            before = store.read_parquet("organisms", organism_id, "eval.parquet")
            meter = _ShiftMeter(spec, store, organism, tokenizer, encoders[0], organism_id)
            meter.embed_all(shift_jobs, samples, before)
            todo = [j for j in shift_jobs if not store.is_finished("shift", j.artefact_id)]
            # Arms share many targets: score the organism's distinct ones in one pass (all
            # of them, so the batches, and the last bits of each score, never depend on
            # what an interrupted worker finished).
            meter.score_targets([item for j in shift_jobs for item in _training_items(j.run)])
            for job in todo:
                frame = meter.measure(job, samples, before)
                manifest = build_manifest(job.config, {"study": spec.seed})
                with store.artefact("shift", job.artefact_id, manifest) as path:
                    frame.write_parquet(path)
                bar.update()
        finally:
            organism.unload()

    _claim_by_organism(
        store, "shift", pending, lambda j: j.run.organism, lambda j: j.artefact_id, build
    )
    bar.close()


def shift_table(store: Store, jobs: list[ShiftJob]) -> pl.DataFrame:
    """Every run's shift measurements (``shift/`` artefacts), one row per run."""
    frames = [store.read_parquet("shift", j.artefact_id) for j in jobs]
    return pl.concat(frames) if frames else pl.DataFrame()


def design_table(
    store: Store, plan: RunPlan, organisms: pl.DataFrame, shift: pl.DataFrame | None = None
) -> pl.DataFrame:
    """``tables/runs.parquet``: one row per (organism, method, arm, k, seed).

    ``delta`` is the behaviour rate after phase 3 minus the organism's; ``none`` rows have
    no run and a delta of 0. Shift columns come from ``shift`` (:func:`shift_table`, one
    row per run) and are null without it and on ``none`` rows.
    """
    shift_columns = (*SHIFT_COLUMNS, *OUTPUT_SHIFT_COLUMNS)
    measured = (
        {}
        if shift is None or shift.is_empty()
        else {
            row["run_id"]: row
            for row in shift.select("run_id", *shift_columns).iter_rows(named=True)
        }
    )
    before = dict(zip(organisms["organism_id"], organisms["organism_rate"], strict=True))
    rates = {i: store.read_manifest("runs", i)["metrics"]["rate"] for i in plan.jobs}
    records = []
    for row in plan.rows:
        organism_id = row.organism.artefact_id
        after: float | None = before[organism_id] if row.arm == "none" else None
        if row.run is not None:
            after = rates[row.run.run_id]
        records.append(
            {
                "run_id": row.run.run_id if row.run else None,
                "organism_id": organism_id,
                "base_model": row.organism.base.name,
                "behaviour": row.organism.behaviour.name,
                "organism_seed": row.organism.seed,
                "seed": row.seed,
                "method": row.method,
                "arm": row.arm,
                "k": row.k,
                "n_train": row.run.n_train if row.run else 0,
                "behaviour_before": before[organism_id],
                "behaviour_after": after,
                # A rate is null when no eval output could be rated (all unparseable).
                "delta": None
                if after is None or before[organism_id] is None
                else after - before[organism_id],
                **{
                    c: measured.get(row.run.run_id, {}).get(c) if row.run else None
                    for c in shift_columns
                },
            }
        )
    schema = {
        "run_id": pl.String,
        "organism_id": pl.String,
        "base_model": pl.String,
        "behaviour": pl.String,
        "organism_seed": pl.Int64,
        "seed": pl.Int64,
        "method": pl.String,
        "arm": pl.String,
        "k": pl.Int64,
        "n_train": pl.Int64,
        "behaviour_before": pl.Float64,
        "behaviour_after": pl.Float64,
        "delta": pl.Float64,
        **{column: pl.Float64 for column in shift_columns},
    }
    return pl.DataFrame(records, schema=schema)


def summarise_deltas(design: pl.DataFrame) -> pl.DataFrame:
    """Mean delta by behaviour x method x arm (the demo's printed table); k-scaling rows
    below a method's full candidate count are left out."""
    full_k = pl.col("k").is_null() | (pl.col("k") == pl.col("k").max().over("method"))
    return (
        design.filter(full_k)
        .group_by("behaviour", "method", "arm")
        .agg(pl.col("delta").mean().alias("mean_delta"), pl.len().alias("n"))
        .sort("behaviour", "method", "arm")
    )
