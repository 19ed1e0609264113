"""Verifying a store against its record, and re-executing sampled runs in a scratch store."""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab._environment import cpu_class
from shiftlab._hashing import content_hash
from shiftlab._integrity import inspect_store
from shiftlab._sqlite_cache import copy_cache
from shiftlab.errors import StoreError
from shiftlab.repro._compare import (
    compare_capability,
    compare_file,
    compare_losses,
    compare_rates,
    compare_statistic,
    config_diff,
    verdict,
)
from shiftlab.repro._fingerprints import (
    check_store_version,
    fingerprint_store,
    read_fingerprints,
    study_text,
)
from shiftlab.repro._types import (
    DEFAULT_TOLERANCES,
    FINGERPRINTS,
    SHIFT_STATISTICS,
    Finding,
    ReproReport,
    Tolerances,
)
from shiftlab.store import MANIFEST, Store
from shiftlab.study import EMBEDDING_CACHE


def _verify(store: Store, record: dict[str, Any], report: ReproReport) -> None:
    """Compare every recorded file and manifest config with what the store holds now."""
    if content_hash(study_text(store)) != record["study_hash"]:
        report.findings.append(
            Finding("study.yaml", "spec", False, "the study spec changed since the record")
        )
    for name, recorded in sorted(record["files"].items()):
        report.n_verified += 1
        detail = compare_file(recorded, store.root / name)
        if detail is not None:
            check = "file" if detail.endswith("is missing") else "content"
            report.findings.append(Finding(name, check, False, f"changed since the record: {detail}"
                                           if check == "content" else detail))  # fmt: skip
    for artefact, config in sorted(record["configs"].items()):
        kind, artefact_id = artefact.split("/", 1)
        if not store.is_finished(kind, artefact_id):
            report.findings.append(Finding(artefact, "manifest", False, "no longer finished"))
            continue
        changes = config_diff(config, store.read_manifest(kind, artefact_id).get("config"))
        if changes:
            detail = "; ".join(changes[:5])
            report.findings.append(
                Finding(artefact, "manifest", False, f"config changed since the record: {detail}")
            )


def _sample_runs(record: dict[str, Any], sample: int | None, seed: int) -> list[str]:
    runs = sorted(record["runs"])
    if not runs:
        raise StoreError("the record has no runs to re-execute")
    if sample is None or sample >= len(runs):
        return runs
    if sample < 1:
        raise ValueError(f"sample must be at least 1, got {sample}")
    return sorted(random.Random(seed).sample(runs, sample))


def _prepare_scratch(store: Store, scratch: str | Path | None) -> tuple[Path, bool]:
    """The scratch folder (new or empty, outside the store) and whether to remove it."""
    if scratch is None:
        return Path(tempfile.mkdtemp(prefix="shiftlab-repro-")), True
    folder = Path(scratch).expanduser().resolve()
    root = store.root.resolve()
    if folder == root or root in folder.parents or folder in root.parents:
        raise StoreError(f"--scratch {scratch}: must be outside the store {store.root}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise StoreError(
            f"--scratch {scratch}: must be a new or empty folder (runs already there would be "
            "compared again instead of re-executed)"
        )
    return folder, False


def _scratch_store(store: Store, scratch: Path, jobs: list[Any], shift_jobs: list[Any]) -> Store:
    """A store holding only the re-executed runs' inputs: the organisms (linked, read
    only), the organisms' samples and the embedding memo (copied), so shift is measured
    against the same samples and vectors (an encoder change is therefore not re-checked)."""
    target = Store.open(scratch)
    shutil.copy2(store.root / "study.yaml", scratch / "study.yaml")
    shutil.copy2(store.root / MANIFEST, scratch / MANIFEST)
    (scratch / "organisms").mkdir(exist_ok=True)
    for organism_id in sorted({j.organism.artefact_id for j in jobs}):
        store.data_files("organisms", organism_id)
        target.path("organisms", organism_id).symlink_to(
            store.path("organisms", organism_id).resolve(), True
        )
    if shift_jobs:
        copy_cache(store.root / EMBEDDING_CACHE, scratch / EMBEDDING_CACHE)
    (scratch / "samples").mkdir(exist_ok=True)
    for samples_id in sorted({j.samples_id for j in shift_jobs}):
        for path in (store.path("samples", samples_id), store.manifest_path("samples", samples_id)):
            if not path.is_file():
                raise StoreError(f"{path} is missing; the run's shift cannot be re-measured")
            shutil.copy2(path, scratch / "samples" / path.name)
    return target


def _device_check(record: dict[str, Any], run_ids: list[str]) -> None:
    """Re-execute on the device class the runs were built on, or say why not."""
    import torch

    here = torch.cuda.is_available()
    for run_id in run_ids:
        recorded = record["runs"][run_id].get("cuda")
        if recorded is None and here:
            raise StoreError(
                f"runs/{run_id} was built on CPU and this machine has a GPU; hide it so the "
                "runs re-execute on CPU: CUDA_VISIBLE_DEVICES= shiftlab repro check ..."
            )
        if recorded is not None and not here:
            raise StoreError(
                f"runs/{run_id} was built on a GPU ({recorded}); re-execute it on a GPU machine"
            )


def _describe_cpu(found: dict[str, str] | None) -> str:
    return f"{found['vendor']} {found['isa']}" if found else "an unrecorded CPU class"


def _same_cpu_class(
    record: dict[str, Any], run_ids: list[str], report: ReproReport
) -> dict[str, bool]:
    """Per run: was it built on this machine's CPU class? Runs that were not are compared
    by the statistical tolerances only, and the report says so."""
    here = cpu_class()
    same = {r: record["runs"][r].get("cpu_class") == here for r in run_ids}
    others: dict[str, list[str]] = {}
    for run_id in run_ids:
        if not same[run_id]:
            built_on = _describe_cpu(record["runs"][run_id].get("cpu_class"))
            others.setdefault(built_on, []).append(run_id)
    for built_on, runs in others.items():
        report.notes.append(
            f"{len(runs)} run(s) were built on {built_on} and this machine is "
            f"{_describe_cpu(here)}: their eval outputs and adapter weights are compared by "
            "the statistical tolerances (losses, rates, shift), not bit for bit"
        )
    return same


def _reexecute(
    store: Store, scratch: Path, run_ids: list[str], record: dict[str, Any],
    report: ReproReport, progress: bool,
) -> tuple[Store, dict[str, str]]:  # fmt: skip
    """Re-execute ``run_ids`` from their manifests into a scratch store; return it and
    the shift artefact measured for each re-executed run."""
    from shiftlab import study
    from shiftlab._workers import single_thread_on_cpu
    from shiftlab.spec import load_spec

    spec = load_spec(store.root / "study.yaml")
    suites = study.load_suites(spec, store)
    plan = study.StudyPlan(spec, suites).runs(store)
    jobs = []
    for run_id in run_ids:
        if run_id not in plan.jobs:
            report.findings.append(Finding(f"runs/{run_id}", "re-execute", False,
                                           "not re-executed: the study's spec and pools no "
                                           "longer give this run (one of them changed after "
                                           "it was built)"))  # fmt: skip
            continue
        store.data_files("runs", run_id)
        config = store.read_manifest("runs", run_id)["config"]
        jobs.append(replace(plan.jobs[run_id], objective=config["objective"],
                            seed=config["seed"], config=config))  # fmt: skip
    by_id = {j.run_id: j for j in jobs}
    # Shift is re-measured only for runs the record holds a shift of.
    shift_jobs = [
        replace(j, run=by_id[j.run.run_id])
        for j in study.plan_shift(spec, plan)
        if j.run.run_id in by_id and record["runs"][j.run.run_id].get("shift")
    ]
    target = _scratch_store(store, scratch, jobs, shift_jobs)
    with single_thread_on_cpu():
        study.rebuild_runs(spec, target, suites, list(by_id.values()), shift_jobs, progress,
                           stack_mates=list(plan.jobs.values()))  # fmt: skip
    report.runs = sorted(by_id)
    return target, {j.run.run_id: j.artefact_id for j in shift_jobs}


def _compare_run(
    run_id: str,
    record: dict[str, Any],
    scratch: Store,
    shift_id: str | None,
    n_permutations: int,
    tolerances: Tolerances,
    bit_for_bit: bool,
) -> list[Finding]:
    name = f"runs/{run_id}"
    recorded = record["runs"][run_id]
    folder = scratch.path("runs", run_id)
    losses = pl.read_parquet(folder / "train_log.parquet")["loss"].to_list()
    metrics = scratch.read_manifest("runs", run_id).get("metrics", {})
    findings = [
        Finding(name, "train_log loss", *verdict(compare_losses(recorded["losses"], losses,
                                                                 tolerances))),
        Finding(name, "eval rate", *verdict(compare_rates(recorded["metrics"], metrics,
                                                           tolerances))),
    ]  # fmt: skip
    if recorded.get("capability"):  # records written before capability was scored lack it
        current = scratch.read_manifest("runs", run_id).get("capability") or {}
        detail = compare_capability(recorded["capability"], current, tolerances)
        findings.append(Finding(name, "capability", *verdict(detail)))
    # Targets come from the stored pools, so they agree exactly anywhere. Eval outputs and
    # weights agree bit for bit only on the CPU class that built them (GPU kernels need not
    # be deterministic at all); elsewhere the rate and loss comparisons above stand for them.
    exact = ["targets.parquet"]
    if bit_for_bit and recorded.get("cuda") is None:
        exact += ["eval.parquet", "adapter/adapter_model.safetensors"]
    for relative in exact:
        key = f"runs/{run_id}/{relative}"
        if key in record["files"]:
            detail = compare_file(record["files"][key], folder / relative)
            findings.append(Finding(name, f"{relative} (exact)", *verdict(detail)))
    shifts = recorded.get("shift") or {}
    if shifts:
        if shift_id is None or shift_id not in shifts:
            findings.append(Finding(name, "shift", False, f"the record's shift of this run "
                                    f"({', '.join(shifts)}) was measured with other settings "
                                    f"than the spec's ({shift_id})"))  # fmt: skip
            return findings
        row = pl.read_parquet(scratch.path("shift", shift_id)).row(0, named=True)
        for statistic in SHIFT_STATISTICS:
            detail = compare_statistic(statistic, shifts[shift_id].get(statistic),
                                       row.get(statistic), n_permutations, tolerances)  # fmt: skip
            findings.append(Finding(f"shift/{shift_id}", statistic, *verdict(detail)))
    return findings


def check_reproduction(
    store: Store,
    *,
    sample: int | None = 3,
    seed: int = 0,
    scratch: str | Path | None = None,
    tolerances: Tolerances = DEFAULT_TOLERANCES,
    progress: bool = True,
) -> ReproReport:
    """Verify ``store`` against its recorded fingerprints and re-execute ``sample`` runs.

    Without a record (``shiftlab repro record``) the store's artefacts as they are now
    are the reference, and the report says so. ``sample=None`` re-executes every run;
    which runs are drawn depends on ``seed`` only. The runs are rebuilt from their
    manifests (config, seed, training settings) in ``scratch`` (a new or empty folder; a
    temporary one, removed afterwards, when None) on the store's organisms, on the
    device class they were built on, and their shift is re-measured against the
    organisms' stored samples. The store itself is only read.

    Raises :class:`StoreError` before re-executing anything when the record or the store
    comes from a newer shiftlab, a file is damaged or missing, or the device differs.
    """
    check_store_version(store)
    recorded = read_fingerprints(store) if (store.root / FINGERPRINTS).exists() else None
    inspect_store(store, hashes=True).refuse(store)  # repro reads every file
    report = ReproReport()
    if recorded is not None:
        record = recorded
        _verify(store, record, report)
    else:
        record = fingerprint_store(store)
        report.notes.append(
            "no recorded fingerprints: the re-executed runs were compared with the store's "
            f"artefacts as they are now (`shiftlab repro record {store.root}` pins them)"
        )
    run_ids = [r for r in _sample_runs(record, sample, seed) if store.is_finished("runs", r)]
    _device_check(record, run_ids)
    from shiftlab.spec import load_spec

    n_permutations = load_spec(store.root / "study.yaml").shift.n_permutations
    same_class = _same_cpu_class(record, run_ids, report)
    folder, temporary = _prepare_scratch(store, scratch)
    try:
        target, shift_of = _reexecute(store, folder, run_ids, record, report, progress)
        for run_id in report.runs:
            report.findings += _compare_run(run_id, record, target, shift_of.get(run_id),
                                            n_permutations, tolerances,
                                            same_class[run_id])  # fmt: skip
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
    return report
