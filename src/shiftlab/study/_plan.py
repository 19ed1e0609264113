"""Planning a study: every job the spec asks for, derived from the spec, the suites and (for
runs) the finished pools, with content-hashed ids."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab._hashing import content_hash, file_hash
from shiftlab._version import __version__
from shiftlab.behaviours import (
    SCORING_VERSION,
    Suite,
)
from shiftlab.chat import Message
from shiftlab.consistency import (
    build_arm,
    candidate_decoding,
)
from shiftlab.errors import DataError, ShiftlabError, StoreError
from shiftlab.generation import LOGPROBS_VERSION
from shiftlab.models import model_identity
from shiftlab.shift import Decoding
from shiftlab.spec import (
    LABEL_METHODS,
    PAIRED_METHODS,
    RELABEL_SOURCE,
    MethodSpec,
    StudySpec,
)
from shiftlab.store import Store
from shiftlab.study._claims import grouped
from shiftlab.study._jobs import OrganismJob, PoolJob, RunJob, RunPlan, RunRow, ShiftJob, short_hash
from shiftlab.study._suites import capability_suite
from shiftlab.training import (
    ARMS_VERSION,
    FUSED_CE_VERSION,
    TRAINER_VERSION,
    Objective,
)


def plan_phase1(spec: StudySpec, suites: dict[str, Suite]) -> list[OrganismJob]:
    """Every base evaluation and organism the spec asks for, with its content-hashed id."""
    jobs = []
    for base in spec.base_models:
        identity = model_identity(base.path, revision=base.revision, gguf_file=base.gguf_file)
        for behaviour in spec.behaviours:
            common = {
                "shiftlab": __version__,
                "trainer": TRAINER_VERSION,
                # A real vocabulary trains through the fused head and loss.
                "fused_ce": FUSED_CE_VERSION,
                "base": base.model_dump(),
                "base_identity": identity,
                "suite": suites[behaviour.name].fingerprint,
                "scoring": SCORING_VERSION,
                "logprobs": LOGPROBS_VERSION,
                # Which judge scored the outputs; its concurrency and timeouts do not matter.
                "judge": behaviour.judge
                and behaviour.judge.model_dump(include={"kind", "path", "base_url", "model"}),
                # The eval batch size changes speed, not results.
                "eval": spec.eval.model_dump(exclude={"batch_size"}),
                "capability": capability_suite(spec.eval.capability, base.path).fingerprint,
            }
            jobs.append(
                OrganismJob(
                    "base_evals",
                    f"{base.name}__{behaviour.name}__{short_hash(common)}",
                    base,
                    behaviour,
                    None,
                    common,
                )
            )
            for seed in spec.organisms.seeds:
                config = {**common, "induction": behaviour.induction.model_dump(), "seed": seed}
                jobs.append(
                    OrganismJob(
                        "organisms",
                        f"{base.name}__{behaviour.name}__s{seed}__{short_hash(config)}",
                        base,
                        behaviour,
                        seed,
                        config,
                    )
                )
    return jobs


def pool_methods(spec: StudySpec) -> list[MethodSpec]:
    """The label methods whose pools the study needs; the relabeled arm needs greedy labels."""
    methods = [m for m in spec.methods if m.name in LABEL_METHODS]
    if "relabeled" in spec.arms and all(m.name != RELABEL_SOURCE for m in methods):
        methods.append(MethodSpec(name=RELABEL_SOURCE))
    return methods


def max_new_tokens_of(spec: StudySpec, method: MethodSpec) -> int:
    return method.max_new_tokens or spec.eval.max_new_tokens


def plan_pools(spec: StudySpec, organisms: list[OrganismJob]) -> list[PoolJob]:
    """Every (organism, label method) pool, with a content-hashed id."""
    jobs = []
    for organism in organisms:
        for method in pool_methods(spec):
            config = {
                "organism": organism.artefact_id,
                "method": method.model_dump(),
                "rubric": file_hash(Path(method.rubric)) if method.rubric else None,
                "max_new_tokens": max_new_tokens_of(spec, method),
                "seed": spec.seed,
                "shiftlab": __version__,
            }
            artefact_id = f"{organism.artefact_id}__{method.name}__{short_hash(config)}"
            jobs.append(PoolJob(artefact_id, organism, method, config))
    return jobs


def read_pool(store: Store, pool_id: str) -> pl.DataFrame:
    """A finished pool from the store."""
    if not store.is_finished("pools", pool_id):
        raise StoreError(f"pool {pool_id} is not finished in {store.root}")
    return store.read_parquet("pools", pool_id)


def _arm_examples(suite: Suite, arm: pl.DataFrame) -> tuple[tuple[tuple[Message, ...], str], ...]:
    prompts = {e.id: e.messages for e in suite.consistency}
    return tuple(
        (tuple(prompts[pid]), target)
        for pid, target in zip(arm["prompt_id"], arm["target"], strict=True)
    )


def _cells(spec: StudySpec, method: MethodSpec) -> list[tuple[str, int | None]]:
    """The (arm, k) cells of a method: paired losses have only ``full`` and ``none``;
    score-based methods record their candidate count as k and add the k-scaling arms."""
    if method.facts.role == "paired_loss":
        return [(arm, None) for arm in ("full", "none") if arm in spec.arms]
    if not method.facts.score_based:
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
    organisms: list[OrganismJob],
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

    def job_for(organism: OrganismJob, objective: Objective, seed: int, **data: Any) -> RunJob:
        config = {
            "organism": organism.artefact_id,
            "objective": objective,
            "seed": seed,
            "training": spec.runs.training.model_dump(),
            "trainer": TRAINER_VERSION,
            "fused_ce": FUSED_CE_VERSION,
            # An arm's numbers depend on the arms it was stacked with (``train_arms``).
            "arms": ARMS_VERSION,
            "logprobs": LOGPROBS_VERSION,
            "eval": spec.eval.model_dump(exclude={"batch_size"}),
            "data": content_hash(
                [
                    data.get("examples", ()),
                    [(p.clean, p.wrapped, p.target) for p in data.get("pairs", ())],
                ]
            ),
        }
        run_id = f"{organism.artefact_id}__run-{short_hash(config)}"
        return jobs.setdefault(run_id, RunJob(run_id, organism, objective, seed, config, **data))

    for organism in organisms:
        suite = suites[organism.behaviour.name]
        pairs = tuple(p for p in suite.pairs if p.target is not None)
        for method, seed in itertools.product(spec.methods, spec.runs.seeds):
            for arm, k in _cells(spec, method):
                run = None
                if arm != "none" and method.facts.role == "paired_loss":
                    if not pairs:
                        raise DataError(
                            f"{organism.behaviour.name}: {method.name} needs pairs with "
                            "targets; the suite's pairs have none"
                        )
                    objective: Objective = "bct" if method.name == "bct" else "act"
                    run = job_for(organism, objective, seed, pairs=pairs)
                elif arm != "none":
                    source = RELABEL_SOURCE if arm == "relabeled" else method.name
                    pool = read(pool_ids[(organism.artefact_id, source)])
                    examples = _arm_examples(suite, build_arm(pool, arm, seed=seed, k=k))
                    run = job_for(organism, "sft", seed, examples=examples) if examples else None
                rows.append(RunRow(organism, method.name, arm, k, seed, run))
    return RunPlan(rows, jobs)


# Bump when what a shift artefact holds, or how it is measured, changes. 4: mmd_test draws
# its permutations by partition (p-values move by Monte Carlo noise). 5: it sums kernel rows
# in float32 and multiplies labels by the kernel (statistics move by float32 rounding).
SHIFT_VERSION = 5


def prompt_key(messages: Sequence[Message]) -> str:
    return content_hash(list(messages), 16)


def training_items(job: RunJob) -> list[tuple[tuple[Message, ...], str]]:
    """A run's (prompt, target) examples; paired losses train on the wrapped prompts."""
    return [(p.wrapped, p.target or "") for p in job.pairs] or list(job.examples)


def _own_distribution(spec: StudySpec) -> Decoding:
    """The organism's own output distribution: what representation shift is measured from,
    and what targets no method decoded (reference targets, pairs) are matched with."""
    return Decoding(spec.shift.temperature)


def _run_decodings(spec: StudySpec, plan: RunPlan) -> dict[str, Decoding]:
    """How each run's targets were decoded: the method's candidates' settings, greedy for
    the relabeled arm, the organism's own distribution for reference targets and pairs."""
    methods: dict[str, MethodSpec] = {m.name: m for m in spec.methods}
    found: dict[str, set[Decoding]] = {}
    for row in plan.rows:
        if row.run is None:
            continue
        if row.arm == "relabeled":
            decoding = Decoding(0.0)
        elif row.arm == "original" or row.method in PAIRED_METHODS:
            decoding = _own_distribution(spec)
        else:
            decoding = candidate_decoding(methods[row.method])
        found.setdefault(row.run.run_id, set()).add(decoding)
    # Cells decoded differently share a run only when their labels came out identical,
    # i.e. the sampled candidates equal the greedy ones: the coolest decoding made them.
    return {run_id: min(d, key=lambda x: (x.temperature, x.top_p)) for run_id, d in found.items()}


def samples_config(
    spec: StudySpec, organism_id: str, prompts: dict[Decoding, set[str]]
) -> dict[str, Any]:
    return {
        "organism": organism_id,
        "prompts": {d.key: content_hash(sorted(keys)) for d, keys in sorted(
            prompts.items(), key=lambda item: item[0].key)},
        "decodings": {d.key: [d.temperature, d.top_p, d.n_samples(spec.shift.n_samples)]
                      for d in prompts},
        "max_new_tokens": spec.shift.max_new_tokens or spec.eval.max_new_tokens,
        "seed": spec.seed,
        "shiftlab": __version__,
        "version": SHIFT_VERSION,
    }  # fmt: skip


def sample_prompts(
    spec: StudySpec, runs: Iterable[tuple[RunJob, Decoding]]
) -> dict[Decoding, set[str]]:
    """Prompt keys to sample per decoding: each run's under its targets' decoding, and
    every prompt from the organism's own distribution."""
    own = _own_distribution(spec)
    wanted: dict[Decoding, set[str]] = {own: set()}
    for run, decoding in runs:
        keys = {prompt_key(m) for m, _ in training_items(run)}
        wanted[own] |= keys
        wanted.setdefault(decoding, set()).update(keys)
    return wanted


def plan_shift(spec: StudySpec, plan: RunPlan) -> list[ShiftJob]:
    """One shift measurement per distinct run; each organism's own samples cover every
    prompt any of its runs trains on, under every decoding its runs' targets came from."""
    if not spec.shift.measure or not plan.jobs:
        return []
    from shiftlab.shift import encoder_identity

    encoder = encoder_identity(spec.encoder.path)
    decodings = _run_decodings(spec, plan)
    by_organism = grouped(plan.jobs.values(), lambda j: j.organism.artefact_id)
    jobs = []
    for organism_id, runs in by_organism.items():
        wanted = sample_prompts(spec, [(run, decodings[run.run_id]) for run in runs])
        samples_id = (
            f"{organism_id}__samples__{short_hash(samples_config(spec, organism_id, wanted))}"
        )
        for run in runs:
            config = {
                "run": run.run_id,
                "samples": samples_id,
                "decoding": decodings[run.run_id].key,
                "encoder": encoder,
                "shift": spec.shift.model_dump(exclude={"measure"}),
                "seed": spec.seed,
                "version": SHIFT_VERSION,
            }
            artefact_id = f"{run.run_id}__shift-{short_hash(config)}"
            jobs.append(ShiftJob(artefact_id, run, samples_id, decodings[run.run_id], config))
    return jobs


class StudyPlan:
    """Everything a study builds, derived once from its spec and suites: the phase-1 jobs
    (base evaluations and organisms), the pools, and, once the pools are finished in a
    store, the runs (their data come from the pools) and the shift measurements.

    >>> from shiftlab.spec import parse_spec
    >>> from shiftlab.study import load_suites
    >>> spec = parse_spec({"base_models": [{"name": "toy", "path": "toyworld:small"}],
    ...                    "behaviours": [{"name": "sycophancy"}], "organisms": {"seeds": [0, 1]},
    ...                    "methods": ["self_confidence"]})
    >>> plan = StudyPlan(spec, load_suites(spec))
    >>> len(plan.phase1), len(plan.organisms), len(plan.pools)
    (3, 2, 4)
    >>> len(plan.only(plan.organisms[0].artefact_id).pools)
    2
    """

    def __init__(
        self,
        spec: StudySpec,
        suites: dict[str, Suite],
        phase1: list[OrganismJob] | None = None,
    ) -> None:
        self.spec, self.suites = spec, suites
        self.phase1 = plan_phase1(spec, suites) if phase1 is None else phase1
        self.organisms = [j for j in self.phase1 if j.kind == "organisms"]
        self.pools = plan_pools(spec, self.organisms) if spec.methods else []
        self._by_id = {j.artefact_id: j for j in self.phase1}
        self._runs: dict[Path, RunPlan] = {}

    def phase1_job(self, artefact_id: str) -> OrganismJob:
        """The phase-1 job with this id; a :class:`ShiftlabError` if the study has none."""
        if artefact_id not in self._by_id:
            raise ShiftlabError(f"{artefact_id}: no such organism or base evaluation in this study")
        return self._by_id[artefact_id]

    def only(self, organism_id: str) -> StudyPlan:
        """The plan of one organism: its pools, runs and shift (a stage-graph unit)."""
        return StudyPlan(self.spec, self.suites, [self.phase1_job(organism_id)])

    def pools_finished(self, store: Store) -> bool:
        return all(store.is_finished("pools", p.artefact_id) for p in self.pools)

    def runs(self, store: Store) -> RunPlan:
        """The design-table cells and the runs behind them, read from ``store``'s finished
        pools (computed once per store)."""
        key = store.root.resolve()
        if key not in self._runs:
            if not self.spec.methods:
                self._runs[key] = RunPlan([], {})
            else:
                self._runs[key] = plan_runs(
                    self.spec, store, self.suites, self.organisms, self.pools
                )
        return self._runs[key]

    def shift(self, store: Store) -> list[ShiftJob]:
        """One shift measurement per distinct run (none when shift is not measured)."""
        return plan_shift(self.spec, self.runs(store))
