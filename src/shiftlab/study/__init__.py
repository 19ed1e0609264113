"""The study: organisms (phase 1), pools (phase 2), arms and runs (phase 3), shift (phase 4),
planned from the spec, built stage by stage into the store, and tabulated.

Every stage reads finished artefacts and writes new ones keyed by a content hash of what
they depend on, so a finished artefact is never recomputed and a killed study resumes.

>>> import tempfile
>>> from shiftlab.store import Store
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

from shiftlab._finished import summarise_deltas
from shiftlab.study._graph import (
    STAGES,
    build_stage_job,
    run_on_executor,
    stage_graph,
    stage_job_finished,
)
from shiftlab.study._jobs import (
    CHECKPOINTS,
    OrganismJob,
    PoolJob,
    RunJob,
    RunPlan,
    RunRow,
    ShiftJob,
)
from shiftlab.study._plan import (
    SHIFT_VERSION,
    StudyPlan,
    plan_phase1,
    plan_pools,
    plan_runs,
    plan_shift,
    read_pool,
)
from shiftlab.study._run import rebuild_runs, run_study, study_status
from shiftlab.study._runs import train_runs
from shiftlab.study._shift import EMBEDDING_CACHE
from shiftlab.study._suites import JUDGE_CACHE, load_suites
from shiftlab.study._tables import (
    OUTPUT_SHIFT_COLUMNS,
    SHIFT_COLUMNS,
    base_model_facts,
    capability_fell,
    design_table,
    organism_table,
    shift_table,
)

__all__ = [
    "CHECKPOINTS",
    "EMBEDDING_CACHE",
    "JUDGE_CACHE",
    "OUTPUT_SHIFT_COLUMNS",
    "SHIFT_COLUMNS",
    "SHIFT_VERSION",
    "STAGES",
    "OrganismJob",
    "PoolJob",
    "RunJob",
    "RunPlan",
    "RunRow",
    "ShiftJob",
    "StudyPlan",
    "base_model_facts",
    "build_stage_job",
    "capability_fell",
    "design_table",
    "load_suites",
    "organism_table",
    "plan_phase1",
    "plan_pools",
    "plan_runs",
    "plan_shift",
    "read_pool",
    "rebuild_runs",
    "run_on_executor",
    "run_study",
    "shift_table",
    "stage_graph",
    "stage_job_finished",
    "study_status",
    "summarise_deltas",
    "train_runs",
]
