"""Running a study: in this process, in worker processes sharing the store, or on an executor;
and what is left."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Sequence

import polars as pl
from tqdm.auto import tqdm

from shiftlab._finished import (
    STUDY_RECORD,
    forget,
    input_stamps,
    record_study,
    watching_inputs,
)
from shiftlab._workers import (
    WorkerError,
    WorkerPool,
    single_thread_on_cpu,
)
from shiftlab.behaviours import (
    Suite,
)
from shiftlab.executors import check_executor
from shiftlab.spec import (
    StudySpec,
)
from shiftlab.store import ORGANISM_TABLE, RUNS_TABLE, Store
from shiftlab.study._claims import ResidentBase
from shiftlab.study._graph import run_on_executor
from shiftlab.study._jobs import RunJob, RunPlan, ShiftJob
from shiftlab.study._organisms import build_organisms
from shiftlab.study._plan import StudyPlan
from shiftlab.study._pools import build_pools
from shiftlab.study._runs import build_runs
from shiftlab.study._shift import build_shift
from shiftlab.study._suites import load_suites
from shiftlab.study._tables import design_table, organism_table, shift_table
from shiftlab.tracking import track_study


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

    Stages: organisms (and base evaluations), candidate pools, runs (arms trained and
    evaluated), and the shift of each run from its organism (``spec.shift``). Finished
    artefacts are skipped without loading any model, so rerunning a finished study only
    reads manifests. ``workers`` > 1 builds the study in that many processes that claim
    jobs through the store (see :func:`shiftlab._workers.claim_each`); the tables are the
    same for any number of workers. ``executor`` (default ``spec.executor.kind``)
    ``submitit`` or ``ray`` runs the stage graph there instead (see
    :mod:`shiftlab.executors`).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    kind = executor or spec.executor.kind
    check_executor(kind)
    with watching_inputs() as (read, listed):
        plan = StudyPlan(spec, load_suites(spec, store))
        store.write_study(spec.to_yaml(), {"study": spec.seed})
        forget(store.root / "tables" / STUDY_RECORD)
        store.sweep_leases()
        if kind != "local":
            run_on_executor(plan, store, kind, progress)
        elif workers == 1:
            with single_thread_on_cpu():
                _build_study(plan, store, progress)
        else:
            _build_with_workers(plan, store, workers, progress)
        store.sweep_leases()
        table = organism_table(store, plan.phase1, spec)
        store.write_table(ORGANISM_TABLE, table)
        if spec.methods:
            runs = plan.runs(store)
            design = design_table(store, runs, table, shift_table(store, plan.shift(store)))
            store.write_table(RUNS_TABLE, design)
    if nothing_left(plan, store):
        artefacts = [(j.kind, j.artefact_id) for j in plan.phase1]
        if spec.methods:
            artefacts += [("pools", p.artefact_id) for p in plan.pools]
            artefacts += [("runs", run_id) for run_id in plan.runs(store).jobs]
            artefacts += [("shift", j.artefact_id) for j in plan.shift(store)]
        record_study(store, spec.to_yaml(), artefacts, input_stamps(store, read, listed))
    if not spec.methods:
        return table
    _track(spec, store)
    return design


def _track(spec: StudySpec, store: Store) -> None:
    """Log the finished study to the spec's tracker (nothing when ``kind: none``); a
    tracker's failure is one warning line, never the study's."""
    if spec.tracking.kind == "none":
        return

    def tables() -> dict[str, pl.DataFrame]:
        from shiftlab.report import attribution_tables

        return attribution_tables(store)[0]

    track_study(store, spec.tracking, study=spec.name, tables=tables)


def _build_study(plan: StudyPlan, store: Store, progress: bool) -> None:
    """Build every stage in this process, claiming each job."""
    spec, suites = plan.spec, plan.suites
    resident = ResidentBase()  # one base model held across the stages
    build_organisms(spec, store, suites, plan.phase1, progress, resident)
    if not spec.methods:
        return
    build_pools(spec, store, suites, plan.pools, progress, resident)
    build_runs(spec, store, suites, plan.runs(store), progress, resident)
    build_shift(spec, store, plan.shift(store), progress, resident)


# What every study worker imports (toyworld and SmolLM2 are Llama models): the fork server
# imports it once for all the workers it starts.
WORKER_IMPORTS = ("peft", "transformers.models.llama.modeling_llama")


def _study_worker(spec: StudySpec, root: str) -> None:
    store = Store.open(root)
    _build_study(StudyPlan(spec, load_suites(spec, store)), store, progress=False)


def nothing_left(plan: StudyPlan, store: Store) -> bool:
    """Whether every artefact of ``plan`` is finished in ``store`` (runs and shift are
    only planned once every pool is)."""
    if not all(store.is_finished(j.kind, j.artefact_id) for j in plan.phase1):
        return False
    if not plan.spec.methods:
        return True
    if not plan.pools_finished(store):
        return False
    if not all(store.is_finished("runs", run_id) for run_id in plan.runs(store).jobs):
        return False
    return all(store.is_finished("shift", j.artefact_id) for j in plan.shift(store))


def _build_with_workers(plan: StudyPlan, store: Store, workers: int, progress: bool) -> None:
    """Build the study in ``workers`` processes while this one follows their progress;
    none is started when nothing is left to build."""
    spec = plan.spec
    if nothing_left(plan, store):
        return
    with WorkerPool(workers, _study_worker, (spec, str(store.root)), WORKER_IMPORTS) as pool:
        phase1 = [(j.kind, j.artefact_id) for j in plan.phase1]
        _follow(pool, store, "organisms", "job", phase1, progress)
        if spec.methods:
            pools = [("pools", p.artefact_id) for p in plan.pools]
            _follow(pool, store, "pools", "pool", pools, progress)
            runs = [("runs", run_id) for run_id in plan.runs(store).jobs]
            _follow(pool, store, "runs", "run", runs, progress)
            shift = [("shift", j.artefact_id) for j in plan.shift(store)]
            _follow(pool, store, "shift", "run", shift, progress)
        pool.join()


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


def study_status(
    store: Store, spec: StudySpec, damaged: Collection[tuple[str, str]] = ()
) -> pl.DataFrame:
    """One row per planned artefact: ``stage, artefact_id, finished``; an artefact in
    ``damaged`` (kind, id) counts as not finished.

    Runs can only be listed once every pool is finished (their data come from the pools).
    """

    def finished(kind: str, artefact_id: str) -> bool:
        return (kind, artefact_id) not in damaged and store.is_finished(kind, artefact_id)

    plan = StudyPlan(spec, load_suites(spec))
    stages = [(j.kind, j.artefact_id) for j in plan.phase1]
    stages += [("pools", p.artefact_id) for p in plan.pools]
    if plan.pools and all(finished("pools", p.artefact_id) for p in plan.pools):
        stages += [("runs", run_id) for run_id in plan.runs(store).jobs]
        stages += [("shift", j.artefact_id) for j in plan.shift(store)]
    return pl.DataFrame(
        {
            "stage": [kind for kind, _ in stages],
            "artefact_id": [artefact_id for _, artefact_id in stages],
            "finished": [finished(kind, artefact_id) for kind, artefact_id in stages],
        }
    )


def rebuild_runs(
    spec: StudySpec,
    store: Store,
    suites: dict[str, Suite],
    runs: Sequence[RunJob],
    shift: Sequence[ShiftJob] = (),
    progress: bool = True,
    stack_mates: Sequence[RunJob] = (),
) -> None:
    """Train, evaluate and store ``runs`` (each with the settings its own config records)
    and measure ``shift`` into ``store``, on organisms the store already holds: what
    ``repro check`` re-executes from manifests. ``stack_mates`` (the study plan's runs, in
    its order) train beside them as the study stacked them, so that each re-executed
    run computes what it computed there; they are not stored."""
    reruns = {j.run_id: j for j in runs}
    jobs: dict[str, RunJob] = {}
    for mate in stack_mates:
        rerun = reruns.get(mate.run_id)
        if rerun is None or rerun.config == mate.config:
            jobs[mate.run_id] = rerun or mate  # a re-executed run keeps its place in the plan
        else:
            # Its record says otherwise than the plan: the planned run still trains in its
            # stack (under another name, unstored), so its stack-mates compute as they did.
            planned = f"{mate.run_id}~planned"
            jobs[planned] = dataclasses.replace(mate, run_id=planned)
    for job in runs:
        jobs.setdefault(job.run_id, job)
    build_runs(spec, store, suites, RunPlan([], jobs), progress, only={j.run_id for j in runs})
    build_shift(spec, store, list(shift), progress)
