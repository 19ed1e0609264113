"""Scripted reproducibility checks: does a finished store still follow from its manifests?

:func:`record_fingerprints` stores a reference fingerprint of every artefact in
``<store>/repro/fingerprints.json``: a hash per table row, each manifest's config, every
run's per-step losses, eval metrics and shift statistics. :func:`check_reproduction`
verifies the store against it and re-executes a sample of runs from their manifests in a
scratch store (training, evaluation and shift, on the store's own organisms and samples),
then compares artefact by artefact:

- deterministic CPU artefacts (tables, eval outputs, training targets, adapter weights):
  exact equality;
- loss curves: an absolute tolerance per step plus a zero-mean test of the residuals, so a
  drift to one side fails even when every step is inside the tolerance;
- sampled metrics (behaviour rates, shift statistics and their permutation p-values): a
  statistical tolerance.

>>> import tempfile
>>> from shiftlab.store import Store
>>> store = Store.open(tempfile.mkdtemp())
>>> record_fingerprints(store)
Traceback (most recent call last):
...
shiftlab.errors.StoreError: ... nothing to record: no finished artefacts or tables
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab import __version__
from shiftlab._hashing import canonical_json, content_hash, file_hash
from shiftlab.errors import StoreError
from shiftlab.pipeline import EMBEDDING_CACHE
from shiftlab.store import MANIFEST, Store, atomic_write_bytes, environment_info

FINGERPRINTS = "repro/fingerprints.json"
FINGERPRINT_FORMAT = 1
# Artefact kinds a study builds; ``attribution`` and the report are analyses of them.
RECORDED_KINDS = ("organisms", "base_evals", "pools", "runs", "samples", "shift")
SHIFT_STATISTICS = (
    "shift_kl",
    "shift_kl_per_token",
    "shift_mmd",
    "shift_mmd_p",
    "shift_energy",
    "shift_c2st_auc",
    "output_shift_mmd",
    "output_shift_mmd_p",
    "output_shift_energy",
)


@dataclass(frozen=True)
class Tolerances:
    """How close a re-executed run must come to its record.

    ``loss_atol``: the largest per-step loss difference; ``drift_alpha``: the level of the
    zero-mean test on the loss residuals; ``rate_alpha``: the level of the two-proportion
    test on behaviour rates; ``shift_rtol``/``shift_atol``: shift statistics (p-values get a
    Monte Carlo tolerance from the number of permutations instead).
    """

    loss_atol: float = 1e-3
    drift_alpha: float = 0.01
    rate_alpha: float = 0.001
    shift_rtol: float = 1e-4
    shift_atol: float = 1e-6


@dataclass(frozen=True)
class Finding:
    """One comparison: which artefact, what was compared, whether it agreed, and how."""

    artefact: str
    check: str
    ok: bool
    detail: str


@dataclass
class ReproReport:
    """Every comparison :func:`check_reproduction` made; ``ok`` when all agree."""

    findings: list[Finding] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    n_verified: int = 0

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def to_frame(self) -> pl.DataFrame:
        """The findings as a tidy frame: artefact, check, ok, detail."""
        return pl.DataFrame(
            [vars(f) for f in self.findings],
            schema={"artefact": pl.String, "check": pl.String, "ok": pl.Boolean,
                    "detail": pl.String},
            orient="row",
        )  # fmt: skip

    def format(self) -> str:
        """A readable per-artefact summary; failures first, with what differs."""
        lines = [
            f"verified {self.n_verified} recorded files; re-executed {len(self.runs)} runs: "
            + ", ".join(self.runs)
        ]
        failures = self.failures()
        by_artefact: dict[str, list[Finding]] = {}
        for finding in failures:
            by_artefact.setdefault(finding.artefact, []).append(finding)
        for artefact, found in by_artefact.items():
            lines.append(f"DIFFERS {artefact}")
            lines += [f"  {f.check}: {f.detail}" for f in found]
        agreed = len(self.findings) - len(failures)
        verdict = "reproduced" if not failures else f"NOT reproduced ({len(by_artefact)} artefacts)"
        lines.append(f"{verdict}: {agreed} of {len(self.findings)} comparisons agree")
        return "\n".join(lines)


# -- fingerprints ------------------------------------------------------------------------


def frame_fingerprint(frame: pl.DataFrame) -> dict[str, Any]:
    """A frame's content hash (schema and values) and a short hash per row.

    >>> a = frame_fingerprint(pl.DataFrame({"x": [1, 2]}))
    >>> a == frame_fingerprint(pl.DataFrame({"x": [1, 2]})), len(a["rows"])
    (True, 2)
    """
    rows = [hashlib.sha256(canonical_json(row).encode()).hexdigest()[:12] for row in frame.rows()]
    schema = {name: str(dtype) for name, dtype in frame.schema.items()}
    return {"sha256": content_hash({"schema": schema, "rows": rows}, 32), "rows": rows}


def _file_fingerprint(path: Path) -> dict[str, Any]:
    if path.suffix == ".parquet":
        return frame_fingerprint(pl.read_parquet(path))
    return {"sha256": file_hash(path, 32)}


def _artefacts(store: Store) -> Iterator[tuple[str, str, list[Path]]]:
    """(kind, id, data files) of every finished artefact; raises if a file is missing."""
    for kind in RECORDED_KINDS:
        for artefact_id in store.finished_ids(kind):
            yield kind, artefact_id, store.data_files(kind, artefact_id)


def _relative(store: Store, path: Path) -> str:
    return path.relative_to(store.root).as_posix()


def _run_record(store: Store, run_id: str, shift_of: dict[str, str]) -> dict[str, Any]:
    folder = store.path("runs", run_id)
    manifest = store.read_manifest("runs", run_id)
    record: dict[str, Any] = {
        "losses": pl.read_parquet(folder / "train_log.parquet")["loss"].to_list(),
        "metrics": manifest.get("metrics", {}),
        "cuda": (manifest.get("hardware") or {}).get("cuda"),
    }
    if run_id in shift_of:
        row = pl.read_parquet(store.path("shift", shift_of[run_id])).row(0, named=True)
        record["shift"] = {"id": shift_of[run_id], **{k: row.get(k) for k in SHIFT_STATISTICS}}
    return record


def _shift_ids_by_run(store: Store) -> dict[str, str]:
    return {
        store.read_manifest("shift", shift_id)["config"]["run"]: shift_id
        for shift_id in store.finished_ids("shift")
    }


def record_fingerprints(store: Store) -> Path:
    """Fingerprint every finished artefact and table of ``store``; return the file written.

    Recording again replaces the previous record. Raises :class:`StoreError` when an
    artefact's manifest lists a file that is missing.
    """
    files: dict[str, dict[str, Any]] = {}
    configs: dict[str, Any] = {}
    for kind, artefact_id, paths in _artefacts(store):
        configs[f"{kind}/{artefact_id}"] = store.read_manifest(kind, artefact_id).get("config")
        for path in paths:
            if path.suffix in (".parquet", ".safetensors"):
                files[_relative(store, path)] = _file_fingerprint(path)
    tables = sorted((store.root / "tables").glob("*.parquet"))
    for path in tables:
        files[_relative(store, path)] = _file_fingerprint(path)
    if not files:
        raise StoreError(f"{store.root}: nothing to record: no finished artefacts or tables")
    shift_of = _shift_ids_by_run(store)
    record = {
        "format": FINGERPRINT_FORMAT,
        "shiftlab_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": environment_info()["git"],
        "study_hash": content_hash(_study_text(store)),
        "files": files,
        "configs": configs,
        "runs": {r: _run_record(store, r, shift_of) for r in store.finished_ids("runs")},
    }
    path = store.root / FINGERPRINTS
    path.parent.mkdir(exist_ok=True)
    atomic_write_bytes(path, json.dumps(record, indent=1, sort_keys=True).encode())
    return path


def _study_text(store: Store) -> str:
    study = store.root / "study.yaml"
    return study.read_text() if study.is_file() else ""


def read_fingerprints(store: Store) -> dict[str, Any]:
    """The record :func:`record_fingerprints` wrote, checked to be one this shiftlab reads."""
    path = store.root / FINGERPRINTS
    if not path.is_file():
        raise StoreError(
            f"{path}: no fingerprints recorded; run `shiftlab repro record {store.root}` first"
        )
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise StoreError(f"{path}: unreadable fingerprints ({error})") from None
    found = record.get("format")
    if not isinstance(found, int) or found > FINGERPRINT_FORMAT:
        raise StoreError(
            f"{path}: fingerprint format {found!r} is not one this shiftlab reads "
            f"(up to {FINGERPRINT_FORMAT}); upgrade shiftlab"
        )
    return record


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


def _check_store_version(store: Store) -> None:
    manifest = store.root / MANIFEST
    if not manifest.is_file():
        raise StoreError(f"{store.root}: not a shiftlab store (no {MANIFEST})")
    built_by = json.loads(manifest.read_text()).get("shiftlab_version") or "0"
    if _version_tuple(built_by) > _version_tuple(__version__):
        raise StoreError(
            f"{manifest}: the store was built by shiftlab {built_by}, newer than the installed "
            f"{__version__}; an older shiftlab cannot be expected to reproduce it: upgrade"
        )


# -- comparisons -------------------------------------------------------------------------


def compare_frames(recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
    """None when two frame fingerprints agree, else which rows differ.

    >>> a = frame_fingerprint(pl.DataFrame({"x": [1, 2, 3]}))
    >>> compare_frames(a, frame_fingerprint(pl.DataFrame({"x": [1, 5, 3]})))
    '1 of 3 rows differ: row 1'
    """
    if recorded["sha256"] == current["sha256"]:
        return None
    old, new = recorded.get("rows"), current.get("rows")
    if old is None or new is None:
        return f"sha256 {recorded['sha256'][:12]} -> {current['sha256'][:12]}"
    if len(old) != len(new):
        return f"{len(old)} rows recorded, {len(new)} now"
    changed = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
    if not changed:
        return "the column types changed"
    shown = ", ".join(str(i) for i in changed[:5]) + (", ..." if len(changed) > 5 else "")
    return f"{len(changed)} of {len(old)} rows differ: row{'s' if len(changed) > 1 else ''} {shown}"


def compare_losses(
    recorded: list[float], current: list[float], tolerances: Tolerances = Tolerances()
) -> str | None:
    """None when a re-executed loss curve agrees with its record, else why not.

    Every step must be within ``loss_atol``, and the residuals must not drift to one side:
    a two-sided one-sample t-test of a zero mean at ``drift_alpha``.

    >>> compare_losses([1.0, 0.9, 0.8], [1.0, 0.9, 0.8]) is None
    True
    >>> compare_losses([1.0, 0.9, 0.8, 0.7], [1.0004, 0.9005, 0.8004, 0.7005])
    'residuals drift one way: mean +0.00045 per step, all 4 steps the same sign'
    """
    import numpy as np

    if len(recorded) != len(current):
        return f"{len(recorded)} steps recorded, {len(current)} now"
    diff = np.asarray(current, dtype=float) - np.asarray(recorded, dtype=float)
    if not np.isfinite(diff).all():
        bad = int(np.flatnonzero(~np.isfinite(diff))[0])
        return f"step {bad}: loss {recorded[bad]!r} recorded, {current[bad]!r} now"
    if not diff.any():
        return None
    worst = int(np.argmax(np.abs(diff)))
    if abs(diff[worst]) > tolerances.loss_atol:
        return (
            f"step {worst}: loss {recorded[worst]:.6f} recorded, {current[worst]:.6f} now "
            f"(|diff| {abs(diff[worst]):.2e} > {tolerances.loss_atol:g})"
        )
    if len(diff) < 2:
        return None
    same_sign = bool((diff > 0).all() or (diff < 0).all())
    spread = float(diff.std(ddof=1))
    if spread == 0.0:
        p_value = 0.0
    else:
        from scipy import stats

        p_value = float(stats.ttest_1samp(diff, 0.0).pvalue)
    if p_value < tolerances.drift_alpha:
        detail = (
            f"all {len(diff)} steps the same sign"
            if same_sign
            else f"t-test p={p_value:.2g} < {tolerances.drift_alpha:g}"
        )
        return f"residuals drift one way: mean {float(diff.mean()):+.2g} per step, {detail}"
    return None


def compare_rates(
    recorded: dict[str, Any], current: dict[str, Any], tolerances: Tolerances = Tolerances()
) -> str | None:
    """None when two behaviour rates agree within sampling error (two-proportion test).

    >>> compare_rates({"n": 100, "n_misbehaving": 30}, {"n": 100, "n_misbehaving": 33}) is None
    True
    >>> compare_rates({"n": 100, "n_misbehaving": 30}, {"n": 100, "n_misbehaving": 70})
    'misbehaving 30/100 recorded, 70/100 now (two-proportion p=1.5e-08 < 0.001)'
    """
    n1, k1 = int(recorded.get("n", 0)), int(recorded.get("n_misbehaving", 0))
    n2, k2 = int(current.get("n", 0)), int(current.get("n_misbehaving", 0))
    if (n1, k1) == (n2, k2):
        return None
    counts = f"misbehaving {k1}/{n1} recorded, {k2}/{n2} now"
    if not n1 or not n2:
        return counts
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0.0:
        return counts
    p_value = math.erfc(abs(k1 / n1 - k2 / n2) / se / math.sqrt(2))
    if p_value < tolerances.rate_alpha:
        return f"{counts} (two-proportion p={p_value:.2g} < {tolerances.rate_alpha:g})"
    return None


def compare_statistic(
    name: str,
    recorded: float | None,
    current: float | None,
    n_permutations: int,
    tolerances: Tolerances = Tolerances(),
) -> str | None:
    """None when a shift statistic agrees with its record.

    Permutation p-values (``*_p``) may differ by Monte Carlo error: four standard errors of
    the difference of two estimates from ``n_permutations`` draws, plus two draws' worth.
    """
    if recorded is None or current is None or math.isnan(recorded) or math.isnan(current):
        same = (recorded is None or math.isnan(recorded)) == (
            current is None or math.isnan(current)
        )
        return None if same else f"{recorded!r} recorded, {current!r} now"
    if name.endswith("_p"):
        p = min(max(recorded, 1 / (n_permutations + 1)), 0.5)
        tolerance = 4 * math.sqrt(2 * p * (1 - p) / n_permutations) + 2 / n_permutations
        rule = f"Monte Carlo tolerance {tolerance:.2g}"
    else:
        tolerance = tolerances.shift_atol + tolerances.shift_rtol * abs(recorded)
        rule = f"tolerance {tolerance:.2g}"
    if abs(current - recorded) > tolerance:
        return f"{recorded:.6g} recorded, {current:.6g} now (|diff| > {rule})"
    return None


def _config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += _config_diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


# -- verification and re-execution -------------------------------------------------------


def _verify(store: Store, record: dict[str, Any], report: ReproReport) -> None:
    """Compare every recorded file and manifest config with what the store holds now."""
    if content_hash(_study_text(store)) != record["study_hash"]:
        report.findings.append(
            Finding("study.yaml", "spec", False, "the study spec changed since the record")
        )
    for name, recorded in sorted(record["files"].items()):
        path = store.root / name
        report.n_verified += 1
        if not path.is_file():
            report.findings.append(Finding(name, "file", False, f"{path} is missing"))
            continue
        detail = (
            compare_frames(recorded, _file_fingerprint(path))
            if "rows" in recorded
            else (None if file_hash(path, 32) == recorded["sha256"] else "bytes differ")
        )
        if detail is not None:
            report.findings.append(
                Finding(name, "content", False, f"changed since the record: {detail}")
            )
    for artefact, config in sorted(record["configs"].items()):
        kind, artefact_id = artefact.split("/", 1)
        if not store.is_finished(kind, artefact_id):
            report.findings.append(Finding(artefact, "manifest", False, "no longer finished"))
            continue
        changes = _config_diff(config, store.read_manifest(kind, artefact_id).get("config"))
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


def _scratch_store(store: Store, scratch: Path, jobs: list[Any], shift_jobs: list[Any]) -> Store:
    """A store holding only the re-executed runs' inputs: the organisms (linked, read only),
    the organisms' samples and the embedding cache (copied), so shift is measured against
    the same samples and vectors."""
    target = Store.open(scratch)
    shutil.copy2(store.root / "study.yaml", scratch / "study.yaml")
    shutil.copy2(store.root / MANIFEST, scratch / MANIFEST)
    (scratch / "organisms").mkdir(exist_ok=True)
    for organism_id in sorted({j.organism.artefact_id for j in jobs}):
        store.data_files("organisms", organism_id)
        link = target.path("organisms", organism_id)
        if not link.exists():
            link.symlink_to(store.path("organisms", organism_id).resolve(), True)
    # Embeddings are a memo of (encoder, text): reuse them, so the same texts give the same
    # vectors whatever batch they would now be padded into.
    cache = store.root / EMBEDDING_CACHE
    if cache.is_file():
        (scratch / EMBEDDING_CACHE).parent.mkdir(parents=True, exist_ok=True)
        with (
            contextlib.closing(sqlite3.connect(cache)) as source,
            contextlib.closing(sqlite3.connect(scratch / EMBEDDING_CACHE)) as copy,
        ):
            source.backup(copy)
    (scratch / "samples").mkdir(exist_ok=True)
    for samples_id in sorted({j.samples_id for j in shift_jobs}):
        for path in (store.path("samples", samples_id), store.manifest_path("samples", samples_id)):
            if not path.is_file():
                raise StoreError(f"{path} is missing; the run's shift cannot be re-measured")
            shutil.copy2(path, scratch / "samples" / path.name)
    return target


def _reexecute(
    store: Store, scratch: Path, run_ids: list[str], report: ReproReport, progress: bool
) -> tuple[Store, dict[str, str]]:
    """Re-execute ``run_ids`` from their manifests into a scratch store; return it and
    the shift artefact of each re-executed run."""
    from shiftlab import pipeline
    from shiftlab._workers import single_thread_on_cpu
    from shiftlab.spec import load_spec

    spec = load_spec(store.root / "study.yaml")
    suites = pipeline.load_suites(spec, store)
    organisms = [j for j in pipeline.plan_phase1(spec, suites) if j.kind == "organisms"]
    pools = pipeline.plan_pools(spec, organisms)
    plan = pipeline.plan_runs(spec, store, suites, organisms, pools)
    jobs = []
    for run_id in run_ids:
        if run_id not in plan.jobs:
            report.findings.append(
                Finding(
                    f"runs/{run_id}",
                    "re-execute",
                    False,
                    "the study's spec and pools no longer give this run (a pool or the spec "
                    "changed after it was built)",
                )
            )
            continue
        store.data_files("runs", run_id)
        config = store.read_manifest("runs", run_id)["config"]
        jobs.append(
            replace(
                plan.jobs[run_id], objective=config["objective"], seed=config["seed"],
                config=config,
            )
        )  # fmt: skip
    by_id = {j.run_id: j for j in jobs}
    shift_jobs = [
        replace(j, run=by_id[j.run.run_id])
        for j in pipeline.plan_shift(spec, plan)
        if j.run.run_id in by_id
    ]
    target = _scratch_store(store, scratch, jobs, shift_jobs)
    scratch_plan = pipeline.RunPlan([], by_id)
    with single_thread_on_cpu():
        pipeline._run_phase3(spec, target, suites, scratch_plan, progress)
        pipeline._run_phase4(spec, target, shift_jobs, progress)
    return target, {j.run.run_id: j.artefact_id for j in shift_jobs}


def _compare_run(
    run_id: str,
    recorded: dict[str, Any],
    record: dict[str, Any],
    scratch: Store,
    shift_id: str | None,
    n_permutations: int,
    tolerances: Tolerances,
) -> list[Finding]:
    import torch

    name = f"runs/{run_id}"
    folder = scratch.path("runs", run_id)
    manifest = scratch.read_manifest("runs", run_id)
    findings = [
        Finding(
            name,
            "train_log loss",
            *_verdict(
                compare_losses(
                    recorded["losses"],
                    pl.read_parquet(folder / "train_log.parquet")["loss"].to_list(),
                    tolerances,
                )
            ),
        ),
        Finding(name, "eval rate", *_verdict(compare_rates(recorded["metrics"],
                                                           manifest.get("metrics", {}),
                                                           tolerances))),
    ]  # fmt: skip
    # Exact equality is promised for CPU runs only: GPU kernels need not be deterministic.
    exact = recorded.get("cuda") is None and not torch.cuda.is_available()
    for relative in ("targets.parquet", "eval.parquet", "adapter/adapter_model.safetensors"):
        if relative != "targets.parquet" and not exact:
            continue
        key = f"runs/{run_id}/{relative}"
        if key not in record["files"] or not (folder / relative).is_file():
            continue
        current = _file_fingerprint(folder / relative)
        detail = (
            compare_frames(record["files"][key], current)
            if "rows" in current
            else (None if current["sha256"] == record["files"][key]["sha256"] else "bytes differ")
        )
        findings.append(Finding(name, f"{relative} (exact)", *_verdict(detail)))
    shift = recorded.get("shift")
    if shift and shift_id:
        row = pl.read_parquet(scratch.path("shift", shift_id)).row(0, named=True)
        for statistic in SHIFT_STATISTICS:
            detail = compare_statistic(
                statistic, shift.get(statistic), row.get(statistic), n_permutations, tolerances
            )
            findings.append(Finding(f"shift/{shift['id']}", statistic, *_verdict(detail)))
    return findings


def _verdict(detail: str | None) -> tuple[bool, str]:
    return (True, "agrees") if detail is None else (False, detail)


def check_reproduction(
    store: Store,
    *,
    sample: int | None = 3,
    seed: int = 0,
    scratch: str | Path | None = None,
    tolerances: Tolerances = Tolerances(),
    progress: bool = True,
) -> ReproReport:
    """Verify ``store`` against its recorded fingerprints and re-execute ``sample`` runs.

    ``sample=None`` re-executes every recorded run; which runs are drawn depends on
    ``seed`` only. The runs are rebuilt from their manifests (config, seed, training
    settings) in ``scratch`` (a temporary folder, removed afterwards, when None) on the
    store's organisms, and their shift is re-measured against the organisms' stored
    samples. The store itself is only read.

    Raises :class:`StoreError` before re-executing anything when there is no record, the
    record or the store comes from a newer shiftlab, or a manifest lists missing files.
    """
    _check_store_version(store)
    record = read_fingerprints(store)
    report = ReproReport()
    _verify(store, record, report)
    run_ids = [r for r in _sample_runs(record, sample, seed) if store.is_finished("runs", r)]
    report.runs = run_ids
    from shiftlab.spec import load_spec

    n_permutations = load_spec(store.root / "study.yaml").shift.n_permutations
    folder = Path(scratch) if scratch is not None else Path(tempfile.mkdtemp(prefix="repro-"))
    try:
        target, shift_of = _reexecute(store, folder, run_ids, report, progress)
        for run_id in run_ids:
            if target.is_finished("runs", run_id):
                report.findings += _compare_run(
                    run_id, record["runs"][run_id], record, target,
                    shift_of.get(run_id), n_permutations, tolerances,
                )  # fmt: skip
    finally:
        if scratch is None:
            shutil.rmtree(folder, ignore_errors=True)
    return report


__all__ = [
    "FINGERPRINTS",
    "Finding",
    "ReproReport",
    "Tolerances",
    "check_reproduction",
    "compare_frames",
    "compare_losses",
    "compare_rates",
    "compare_statistic",
    "frame_fingerprint",
    "read_fingerprints",
    "record_fingerprints",
]
