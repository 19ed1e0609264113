"""The stage graph an executor runs: each organism's stages as units waiting on each other."""

from __future__ import annotations

from shiftlab._workers import (
    single_thread_on_cpu,
)
from shiftlab.errors import ShiftlabError
from shiftlab.executors import StageJob, run_stage_graph
from shiftlab.spec import (
    StudySpec,
)
from shiftlab.store import Store
from shiftlab.study._claims import ResidentBase
from shiftlab.study._organisms import build_organisms
from shiftlab.study._plan import StudyPlan
from shiftlab.study._pools import build_pools
from shiftlab.study._runs import build_runs
from shiftlab.study._shift import build_shift
from shiftlab.study._suites import load_suites

STAGES = ("organisms", "pools", "runs", "shift")


def stage_graph(plan: StudyPlan) -> list[StageJob]:
    """Every unit of the study and what each waits for: a phase-1 artefact (stage
    ``organisms``, base evaluations too), or one organism's pools (waiting for the
    organism), runs (for its pools) or shift (for its runs); other organisms need not be
    finished."""
    graph = [StageJob("organisms", j.artefact_id) for j in plan.phase1]
    if not plan.spec.methods:
        return graph
    for job in plan.organisms:
        key = job.artefact_id
        graph.append(StageJob("pools", key, (f"organisms:{key}",)))
        graph.append(StageJob("runs", key, (f"pools:{key}",)))
        if plan.spec.shift.measure:
            graph.append(StageJob("shift", key, (f"runs:{key}",)))
    return graph


def stage_job_finished(plan: StudyPlan, store: Store, job: StageJob) -> bool:
    """True when every artefact of ``job`` is finished (reads manifests only)."""
    if job.stage == "organisms":
        return store.is_finished(plan.phase1_job(job.key).kind, job.key)
    unit = plan.only(job.key)
    if not unit.pools_finished(store):
        return False
    if job.stage == "pools":
        return True
    if not all(store.is_finished("runs", r) for r in unit.runs(store).jobs):
        return False
    shift = unit.shift(store) if job.stage == "shift" else []
    return all(store.is_finished("shift", j.artefact_id) for j in shift)


# The base model an executor's worker process keeps between the jobs it runs.
_WORKER_BASE = ResidentBase()


def build_stage_job(spec: StudySpec, root: str, stage: str, key: str) -> str | None:
    """Build one unit of the stage graph into the store at ``root`` (what an executor's
    worker runs). Returns None, or the message of an input error, which executors
    re-raise as such on the submitting side. Finished artefacts are skipped; artefacts
    are claimed through the store's leases, so a unit redone after its worker died does
    not repeat what that worker finished."""
    try:
        store = Store.open(root)
        suites = load_suites(spec, store)
        plan = StudyPlan(spec, suites)
        if stage not in STAGES:
            raise ShiftlabError(f"unknown stage {stage!r}; expected one of {STAGES}")
        with single_thread_on_cpu():
            if stage == "organisms":
                build_organisms(spec, store, suites, [plan.phase1_job(key)], False, _WORKER_BASE)
                return None
            unit = plan.only(key)
            if stage == "pools":
                build_pools(spec, store, suites, unit.pools, False, _WORKER_BASE)
            elif stage == "runs":
                build_runs(spec, store, suites, unit.runs(store), False, _WORKER_BASE)
            else:
                build_shift(spec, store, unit.shift(store), False, _WORKER_BASE)
    except ShiftlabError as error:
        return f"{type(error).__name__}: {error}"
    return None


def run_on_executor(plan: StudyPlan, store: Store, kind: str, progress: bool = True) -> None:
    """Build the study's stage graph on the ``kind`` executor (submitit or ray)."""
    run_stage_graph(
        stage_graph(plan),
        build=build_stage_job,
        args=(plan.spec, str(store.root.resolve())),
        finished=lambda job: stage_job_finished(plan, store, job),
        config=plan.spec.executor,
        store=store,
        kind=kind,
        progress=progress,
    )
