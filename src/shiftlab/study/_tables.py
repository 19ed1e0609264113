"""The study's tables: the organism table, the design table (one row per run cell), shift rows,
summaries."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab.behaviours import (
    paired_rates,
)
from shiftlab.spec import (
    StudySpec,
)
from shiftlab.store import Store
from shiftlab.study._claims import load_base
from shiftlab.study._jobs import OrganismJob, RunPlan, ShiftJob

# The organism table's strength and stability columns, from the organism's manifest.
STRENGTH_COLUMNS = {
    "strength": ("strength", "rate"),
    "strength_ci_low": ("strength", "ci_low"),
    "strength_ci_high": ("strength", "ci_high"),
    "strength_n_judged": ("strength", "n_judged"),
    "stability": ("stability", "gap"),
    "misbehaving_logprob": ("stability", "misbehaving_logprob"),
    "aligned_logprob": ("stability", "aligned_logprob"),
    "misbehaving_entropy": ("stability", "entropy"),
    "n_misbehaving_samples": ("stability", "n_misbehaving"),
    "induced_share": ("calibration", "share"),
    "calibration_rate": ("calibration", "rate"),
    "calibration_inductions": ("calibration", "inductions"),
    "calibrated": ("calibration", "within_tolerance"),
}

# Typed, so that a table whose rates are all null (every verdict excluded or
# unparseable) still has numeric columns to round, print and compare.
ORGANISM_SCHEMA = {
    "organism_id": pl.String,
    "base_model": pl.String,
    "behaviour": pl.String,
    "seed": pl.Int64,
    "base_rate": pl.Float64,
    "base_ci_low": pl.Float64,
    "base_ci_high": pl.Float64,
    "organism_rate": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "n_eval": pl.Int64,
    "n_unparseable": pl.Int64,
    "base_capability": pl.Float64,
    "organism_capability": pl.Float64,
    "organism_capability_ci_low": pl.Float64,
    "organism_capability_ci_high": pl.Float64,
    "n_capability": pl.Int64,
    "rate_definition": pl.String,
    "references": pl.String,
}


def capability_fell(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether capability fell from ``before`` to ``after`` (:class:`~shiftlab.behaviours.
    CapabilityScore` dicts) by more than the questions' sampling noise explains: the
    after-model's whole 95% interval lies below the before-model's accuracy.

    >>> capability_fell({"accuracy": 0.9}, {"accuracy": 0.1, "ci_high": 0.3})
    True
    >>> capability_fell({"accuracy": 0.9}, {"accuracy": 0.8, "ci_high": 0.95})
    False
    """
    return bool(after["ci_high"] < before["accuracy"])


def organism_table(store: Store, jobs: list[OrganismJob], spec: StudySpec) -> pl.DataFrame:
    """One row per organism: its base's and its own headline rates with 95% CIs (greedy or
    sampled, as ``rate_definition`` says), both models' capability accuracy, its strength
    (the sampled rate with an interval over prompts) and the stability of its misbehaviour
    (``stability``: the misbehaving samples' per-token log-prob minus the aligned answer's,
    nats; ``misbehaving_entropy``), null where ``eval.strength_samples`` is 0 or nothing
    misbehaved; for calibrated toyworld organisms the induction share that reached the
    target, the rate measured on the calibration prompts and whether it is within
    tolerance; and ``references``, what the ``original`` arm trains on."""
    definition = f"sampled x{spec.eval.n_samples}" if spec.eval.n_samples else "greedy"
    base_manifests = {
        (j.base.name, j.behaviour.name): store.read_manifest(j.kind, j.artefact_id)
        for j in jobs
        if j.kind == "base_evals"
    }
    rows = []
    for job in jobs:
        if job.kind != "organisms":
            continue
        manifest = store.read_manifest(job.kind, job.artefact_id)
        metrics = manifest["metrics"]
        base_manifest = base_manifests[(job.base.name, job.behaviour.name)]
        base = base_manifest["metrics"]
        base_capability, capability = base_manifest["capability"], manifest["capability"]
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
                "base_capability": base_capability["accuracy"],
                "organism_capability": capability["accuracy"],
                "organism_capability_ci_low": capability["ci_low"],
                "organism_capability_ci_high": capability["ci_high"],
                "n_capability": capability["n"],
                "rate_definition": definition,
                "references": manifest.get("references"),
                **{
                    column: manifest.get(part, {}).get(field)
                    for column, (part, field) in STRENGTH_COLUMNS.items()
                },
            }
        )
    kinds = {"strength_n_judged": pl.Int64, "n_misbehaving_samples": pl.Int64,
             "calibration_inductions": pl.Int64, "calibrated": pl.Boolean}  # fmt: skip
    strength = {c: kinds.get(c, pl.Float64) for c in STRENGTH_COLUMNS}
    return pl.DataFrame(rows, schema={**ORGANISM_SCHEMA, **strength})


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
        model, _ = load_base(base)
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


SHIFT_COLUMNS = (
    "shift_nll_gap",
    "shift_nll_gap_ci_low",
    "shift_nll_gap_ci_high",
    "shift_mmd",
    "shift_mmd_p",
    "shift_c2st_auc",
    "shift_energy",
)


OUTPUT_SHIFT_COLUMNS = ("output_shift_mmd", "output_shift_mmd_p", "output_shift_energy")


def shift_table(store: Store, jobs: list[ShiftJob]) -> pl.DataFrame:
    """Every run's shift measurements (``shift/`` artefacts), one row per run."""
    frames = [store.read_parquet("shift", j.artefact_id) for j in jobs]
    return pl.concat(frames) if frames else pl.DataFrame()


def _eval_rows(store: Store, kind: str, artefact_id: str) -> pl.DataFrame:
    return store.read_parquet(kind, artefact_id, "eval.parquet", ["sample_id", "verdict", "value"])


def design_table(
    store: Store, plan: RunPlan, organisms: pl.DataFrame, shift: pl.DataFrame | None = None
) -> pl.DataFrame:
    """``tables/runs.parquet``: one row per (organism, method, arm, k, seed).

    ``behaviour_before`` and ``behaviour_after`` are the organism's and the run's
    headline rates on the same eval prompts, those judged for both (``n_judged`` of
    ``n_eval``; ``few_judged`` when fewer than half), and ``delta`` their difference;
    ``n_unparseable`` counts the run's outputs that could not be judged.
    ``capability_before`` and ``capability_after`` are the organism's and the run's
    accuracy on the capability suite (every question, both times), ``capability_delta``
    their difference, and ``capability_fell`` says the run's 95% interval lies wholly
    below the organism's accuracy. ``none`` rows have no run and a delta of 0; so does an
    arm whose training set came out empty (a filter that kept no prompt), marked
    ``empty_training_set``. Shift columns come from ``shift`` (:func:`shift_table`, one row
    per run) and are null without it and on rows without a run.
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
    organism_ids = organisms["organism_id"].to_list()
    capability = {i: store.read_manifest("organisms", i)["capability"] for i in organism_ids}
    capability |= {i: store.read_manifest("runs", i)["capability"] for i in plan.jobs}
    before = {i: _eval_rows(store, "organisms", i) for i in organism_ids}
    units = {i: store.read_manifest("organisms", i)["metrics"]["unit"] for i in organism_ids}
    own = {i: paired_rates(before[i], before[i], units[i]) for i in organism_ids}
    paired = {
        run_id: paired_rates(before[job.organism.artefact_id],
                             _eval_rows(store, "runs", run_id), units[job.organism.artefact_id])
        for run_id, job in plan.jobs.items()
    }  # fmt: skip
    records = []
    for row in plan.rows:
        organism_id = row.organism.artefact_id
        rates = paired[row.run.run_id] if row.run is not None else own[organism_id]
        delta = rates.delta if row.run is not None else (0.0 if own[organism_id].n_judged else None)
        before, after = (
            capability[organism_id],
            capability[row.run.run_id if row.run else organism_id],
        )
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
                "behaviour_before": rates.before,
                "behaviour_after": rates.before if row.run is None else rates.after,
                "delta": delta,
                "n_eval": rates.n_eval,
                "n_judged": rates.n_judged,
                "n_unparseable": rates.n_unparseable,
                "few_judged": rates.n_judged < rates.n_eval / 2,
                "empty_training_set": row.run is None and row.arm != "none",
                "capability_before": before["accuracy"],
                "capability_after": after["accuracy"],
                "capability_delta": after["accuracy"] - before["accuracy"],
                "capability_fell": capability_fell(before, after),
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
        "n_eval": pl.Int64,
        "n_judged": pl.Int64,
        "n_unparseable": pl.Int64,
        "few_judged": pl.Boolean,
        "empty_training_set": pl.Boolean,
        "capability_before": pl.Float64,
        "capability_after": pl.Float64,
        "capability_delta": pl.Float64,
        "capability_fell": pl.Boolean,
        **{column: pl.Float64 for column in shift_columns},
    }
    return pl.DataFrame(records, schema=schema)
