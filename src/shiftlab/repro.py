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
>>> record_fingerprints(Store.open(tempfile.mkdtemp()))
Traceback (most recent call last):
...
shiftlab.errors.StoreError: ...: not a shiftlab store (no manifest.json)
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
    "shift_nll_gap",
    "shift_nll_gap_ci_low",
    "shift_nll_gap_ci_high",
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

    ``loss_atol``: the largest per-step loss difference; ``drift_min`` and
    ``drift_alpha``: the smallest mean residual that counts as a drift and the level of
    the zero-mean test that must find it; ``rate_alpha``: the level of the two-proportion
    test on behaviour rates; ``shift_rtol``/``shift_atol``: shift statistics (p-values get a
    Monte Carlo tolerance from the number of permutations instead).
    """

    loss_atol: float = 1e-3
    drift_min: float = 1e-4
    drift_alpha: float = 0.01
    rate_alpha: float = 0.01
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
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def format(self) -> str:
        """A readable per-artefact summary; failures first, with what differs."""
        shown = ", ".join(self.runs[:5]) + (f" and {len(self.runs) - 5} more" if len(self.runs) > 5
                                            else "")  # fmt: skip
        lines = [f"verified {self.n_verified} recorded files; re-executed {len(self.runs)} runs"
                 + (f": {shown}" if shown else "")]  # fmt: skip
        lines += [f"note: {note}" for note in self.notes]
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


def _run_record(store: Store, run_id: str, shifts: list[str]) -> dict[str, Any]:
    folder = store.path("runs", run_id)
    manifest = store.read_manifest("runs", run_id)
    record: dict[str, Any] = {
        "losses": pl.read_parquet(folder / "train_log.parquet")["loss"].to_list(),
        "metrics": manifest.get("metrics", {}),
        "cuda": (manifest.get("hardware") or {}).get("cuda"),
        "shift": {},
    }
    for shift_id in shifts:
        row = pl.read_parquet(store.path("shift", shift_id)).row(0, named=True)
        record["shift"][shift_id] = {k: row.get(k) for k in SHIFT_STATISTICS}
    return record


def _shift_ids_by_run(store: Store) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for shift_id in store.finished_ids("shift"):
        run_id = store.read_manifest("shift", shift_id)["config"]["run"]
        found.setdefault(run_id, []).append(shift_id)
    return found


def fingerprint_store(store: Store) -> dict[str, Any]:
    """The fingerprints of every finished artefact and table of ``store`` (what
    :func:`record_fingerprints` writes). Raises :class:`StoreError` when an artefact's
    manifest lists a file that is missing."""
    files: dict[str, dict[str, Any]] = {}
    configs: dict[str, Any] = {}
    for kind, artefact_id, paths in _artefacts(store):
        configs[f"{kind}/{artefact_id}"] = store.read_manifest(kind, artefact_id).get("config")
        for path in paths:
            files[_relative(store, path)] = _file_fingerprint(path)
    for path in sorted((store.root / "tables").glob("*.parquet")):
        files[_relative(store, path)] = _file_fingerprint(path)
    if not files:
        raise StoreError(f"{store.root}: nothing to record: no finished artefacts or tables")
    shifts = _shift_ids_by_run(store)
    return {
        "format": FINGERPRINT_FORMAT,
        "shiftlab_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": environment_info()["git"],
        "study_hash": content_hash(_study_text(store)),
        "files": files,
        "configs": configs,
        "runs": {r: _run_record(store, r, shifts.get(r, [])) for r in store.finished_ids("runs")},
    }


def record_fingerprints(store: Store, *, force: bool = False) -> Path:
    """Fingerprint every finished artefact and table of ``store`` into
    ``repro/fingerprints.json``; return its path. An existing record is replaced only with
    ``force`` (it is the reference later checks compare with)."""
    _check_store_version(store)
    path = store.root / FINGERPRINTS
    if path.exists() and not force:
        raise StoreError(
            f"{path} exists: it is the reference `repro check` compares with; "
            "pass --force to replace it"
        )
    record = fingerprint_store(store)
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
    found = record.get("format") if isinstance(record, dict) else None
    if not isinstance(found, int) or found > FINGERPRINT_FORMAT:
        raise StoreError(
            f"{path}: fingerprint format {found!r} is not one this shiftlab reads "
            f"(up to {FINGERPRINT_FORMAT}); upgrade shiftlab"
        )
    missing = [k for k in ("study_hash", "files", "configs", "runs") if k not in record]
    if missing:
        raise StoreError(f"{path}: not a complete record (no {', '.join(missing)}); record again")
    return record


def _check_store_version(store: Store) -> None:
    from packaging.version import InvalidVersion, Version

    manifest = store.root / MANIFEST
    if not manifest.is_file():
        raise StoreError(f"{store.root}: not a shiftlab store (no {MANIFEST})")
    built_by = json.loads(manifest.read_text()).get("shiftlab_version") or "0"
    try:
        newer = Version(built_by) > Version(__version__)
    except InvalidVersion:
        raise StoreError(f"{manifest}: shiftlab_version {built_by!r} is not a version") from None
    if newer:
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
    a drift is a mean residual of at least ``drift_min`` that a one-sample t-test at
    ``drift_alpha`` finds. (Residuals of a training curve are autocorrelated, which makes
    the t-test too eager; the minimum effect keeps float noise from failing a check.)
    Steps that are NaN in both agree.

    >>> compare_losses([1.0, 0.9, 0.8], [1.0, 0.9, 0.8]) is None
    True
    >>> compare_losses([1.0, 0.9, 0.8, 0.7], [1.0004, 0.9005, 0.8004, 0.7005])
    'residuals drift one way: mean +0.00045 per step, all 4 steps the same sign'
    """
    import numpy as np

    if len(recorded) != len(current):
        return f"{len(recorded)} steps recorded, {len(current)} now"
    old, new = np.asarray(recorded, dtype=float), np.asarray(current, dtype=float)
    both_nan = np.isnan(old) & np.isnan(new)
    diff = np.where(both_nan, 0.0, new - old)
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
    if abs(float(diff.mean())) >= tolerances.drift_min and p_value < tolerances.drift_alpha:
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
    """None when two headline metrics agree: rates within sampling error (a two-proportion
    test on the judged outputs), other metrics within ``shift_rtol``.

    >>> compare_rates({"n": 100, "n_misbehaving": 30}, {"n": 100, "n_misbehaving": 33}) is None
    True
    >>> compare_rates({"n": 100, "n_misbehaving": 30}, {"n": 100, "n_misbehaving": 70})
    'misbehaving 30/100 recorded, 70/100 now (two-proportion p=1.5e-08 < 0.01)'
    """
    if not recorded or not current:
        return f"metrics {recorded or 'missing'} recorded, {current or 'missing'} now"
    unit = recorded.get("unit", "rate")
    if unit != current.get("unit", "rate"):
        return f"unit {unit!r} recorded, {current.get('unit', 'rate')!r} now"
    if unit != "rate":
        old, new = recorded.get("rate"), current.get("rate")
        if old is None or new is None:
            return None if old == new else f"{old!r} recorded, {new!r} now"
        close = abs(new - old) <= tolerances.shift_rtol * max(abs(old), 1e-12)
        return None if close else f"{old:.6g} recorded, {new:.6g} now"
    n1 = int(recorded.get("n", 0)) - int(recorded.get("n_unparseable", 0))
    n2 = int(current.get("n", 0)) - int(current.get("n_unparseable", 0))
    k1, k2 = int(recorded.get("n_misbehaving", 0)), int(current.get("n_misbehaving", 0))
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
    the difference of two estimates from ``n_permutations`` draws (at whichever p is nearer
    1/2, kept off 0 and 1), plus two draws' worth. Other statistics are deterministic given
    the texts: ``shift_atol`` plus ``shift_rtol`` relative.
    """
    if recorded is None or current is None or math.isnan(recorded) or math.isnan(current):
        same = (recorded is None or math.isnan(recorded)) == (
            current is None or math.isnan(current)
        )
        return None if same else f"{recorded!r} recorded, {current!r} now"
    if name.endswith("_p"):
        edge = 1 / (n_permutations + 1)
        nearer_half = min(recorded, current, key=lambda v: abs(v - 0.5))
        p = min(max(nearer_half, edge), 1 - edge)
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


def _compare_file(recorded: dict[str, Any], path: Path) -> str | None:
    """None when the file at ``path`` matches its fingerprint, else what differs."""
    if not path.is_file():
        return f"{path} is missing"
    if "rows" in recorded:
        return compare_frames(recorded, _file_fingerprint(path))
    return None if file_hash(path, 32) == recorded["sha256"] else "bytes differ"


def _verify(store: Store, record: dict[str, Any], report: ReproReport) -> None:
    """Compare every recorded file and manifest config with what the store holds now."""
    if content_hash(_study_text(store)) != record["study_hash"]:
        report.findings.append(
            Finding("study.yaml", "spec", False, "the study spec changed since the record")
        )
    for name, recorded in sorted(record["files"].items()):
        report.n_verified += 1
        detail = _compare_file(recorded, store.root / name)
        if detail is not None:
            check = "file" if detail.endswith("is missing") else "content"
            report.findings.append(Finding(name, check, False, f"changed since the record: {detail}"
                                           if check == "content" else detail))  # fmt: skip
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
    cache = store.root / EMBEDDING_CACHE
    if cache.is_file() and shift_jobs:
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


def _reexecute(
    store: Store, scratch: Path, run_ids: list[str], record: dict[str, Any],
    report: ReproReport, progress: bool,
) -> tuple[Store, dict[str, str]]:  # fmt: skip
    """Re-execute ``run_ids`` from their manifests into a scratch store; return it and
    the shift artefact measured for each re-executed run."""
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
        for j in pipeline.plan_shift(spec, plan)
        if j.run.run_id in by_id and record["runs"][j.run.run_id].get("shift")
    ]
    target = _scratch_store(store, scratch, jobs, shift_jobs)
    with single_thread_on_cpu():
        pipeline._run_phase3(spec, target, suites, pipeline.RunPlan([], by_id), progress)
        pipeline._run_phase4(spec, target, shift_jobs, progress)
    report.runs = sorted(by_id)
    return target, {j.run.run_id: j.artefact_id for j in shift_jobs}


def _compare_run(
    run_id: str,
    record: dict[str, Any],
    scratch: Store,
    shift_id: str | None,
    n_permutations: int,
    tolerances: Tolerances,
) -> list[Finding]:
    name = f"runs/{run_id}"
    recorded = record["runs"][run_id]
    folder = scratch.path("runs", run_id)
    losses = pl.read_parquet(folder / "train_log.parquet")["loss"].to_list()
    metrics = scratch.read_manifest("runs", run_id).get("metrics", {})
    findings = [
        Finding(name, "train_log loss", *_verdict(compare_losses(recorded["losses"], losses,
                                                                 tolerances))),
        Finding(name, "eval rate", *_verdict(compare_rates(recorded["metrics"], metrics,
                                                           tolerances))),
    ]  # fmt: skip
    # Exact equality is promised for CPU runs only: GPU kernels need not be deterministic.
    exact = ["targets.parquet"]
    if recorded.get("cuda") is None:
        exact += ["eval.parquet", "adapter/adapter_model.safetensors"]
    for relative in exact:
        key = f"runs/{run_id}/{relative}"
        if key in record["files"]:
            detail = _compare_file(record["files"][key], folder / relative)
            findings.append(Finding(name, f"{relative} (exact)", *_verdict(detail)))
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
            findings.append(Finding(f"shift/{shift_id}", statistic, *_verdict(detail)))
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

    Without a record (``shiftlab repro record``) the store's artefacts as they are now
    are the reference, and the report says so. ``sample=None`` re-executes every run;
    which runs are drawn depends on ``seed`` only. The runs are rebuilt from their
    manifests (config, seed, training settings) in ``scratch`` (a new or empty folder; a
    temporary one, removed afterwards, when None) on the store's organisms, on the
    device class they were built on, and their shift is re-measured against the
    organisms' stored samples. The store itself is only read.

    Raises :class:`StoreError` before re-executing anything when the record or the store
    comes from a newer shiftlab, a manifest lists missing files, or the device differs.
    """
    _check_store_version(store)
    report = ReproReport()
    if (store.root / FINGERPRINTS).exists():
        record = read_fingerprints(store)
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
    folder, temporary = _prepare_scratch(store, scratch)
    try:
        target, shift_of = _reexecute(store, folder, run_ids, record, report, progress)
        for run_id in report.runs:
            report.findings += _compare_run(run_id, record, target, shift_of.get(run_id),
                                            n_permutations, tolerances)  # fmt: skip
    finally:
        if temporary:
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
    "fingerprint_store",
    "frame_fingerprint",
    "read_fingerprints",
    "record_fingerprints",
]
