"""A store's evaluations as inspect_ai ``.eval`` logs (``shiftlab export inspect``).

One log per run, organism and base evaluation: every eval prompt is a sample (its input,
the model's output, the verdict and its detail, the behaviour scorer's value) and the
log's metadata carries the design keys (organism, base model, behaviour, method, arm, k,
seed), so ``inspect view OUT`` lists them and ``inspect_ai.analysis.samples_df`` /
``evals_df`` read them into frames. Nothing is unpickled: the store's parquet files are
read verified, and inspect_ai writes its own zip-of-JSON format.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab._hashing import content_hash
from shiftlab.errors import ShiftlabError
from shiftlab.store import ORGANISM_TABLE, RUNS_TABLE, Store

# The score every exported sample carries when its output was judged: 1 misbehaving, 0 aligned.
MISBEHAVIOUR = "misbehaviour"
VERDICT = "verdict"
VALUE = "value"
DESIGN_KEYS = ("organism", "base_model", "behaviour", "method", "arm", "k", "seed")


def _inspect() -> Any:
    try:
        import inspect_ai.log as log
    except ImportError:
        raise ShiftlabError(
            "inspect_ai logs need inspect-ai: pip install 'shiftlab[inspect]'"
        ) from None
    return log


def _clean(value: Any) -> Any:
    """A JSON-safe metadata value (NaN becomes None)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _sample(row: dict[str, Any], design: dict[str, Any]) -> Any:
    from inspect_ai.log import EvalSample
    from inspect_ai.model import ChatMessageAssistant, ChatMessageUser, ModelOutput
    from inspect_ai.scorer import Score

    prompt, output = row["prompt"] or "", row["output"] or ""
    scores = {VERDICT: Score(value=row["verdict"], explanation=row.get("detail") or None)}
    if row.get("score") is not None:
        scores[MISBEHAVIOUR] = Score(
            value=float(row["score"]), answer=row["verdict"], explanation=row.get("detail") or None
        )
    if row.get("value") is not None:
        scores[VALUE] = Score(value=float(row["value"]))
    metadata: dict[str, Any] = {
        key: _clean(row.get(key))
        for key in ("prompt_id", "group", "detail", "mean_logprob", "n_tokens")
        if key in row
    }
    return EvalSample(
        id=row["sample_id"],
        epoch=1,
        input=prompt,
        target="",
        messages=[ChatMessageUser(content=prompt), ChatMessageAssistant(content=output)],
        output=ModelOutput.from_content(model=design["model"], content=output),
        scores=scores,
        metadata={**metadata, **{k: design[k] for k in DESIGN_KEYS}},
    )


def _log(evals: pl.DataFrame, design: dict[str, Any], created: str) -> Any:
    log = _inspect()
    samples = [_sample(row, design) for row in evals.iter_rows(named=True)]
    judged = evals.filter(pl.col("score").is_not_null())["score"]
    metrics = {}
    if judged.len():
        mean = float(judged.mean())  # type: ignore[arg-type]
        metrics["mean"] = log.EvalMetric(name="mean", value=mean)
        if judged.len() > 1:
            stderr = float(judged.std()) / math.sqrt(judged.len())  # type: ignore[arg-type]
            metrics["stderr"] = log.EvalMetric(name="stderr", value=stderr)
    score = log.EvalScore(
        name=MISBEHAVIOUR,
        scorer=MISBEHAVIOUR,
        scored_samples=judged.len(),
        unscored_samples=evals.height - judged.len(),
        metrics=metrics,
    )
    spec = log.EvalSpec(
        # Ids of their own per log (samples_df and evals_df join on eval_id): the
        # artefact's, the behaviour's, and the export's (one study store).
        eval_id=content_hash(design["artefact_id"], 22),
        run_id=design["export_id"],
        task_id=content_hash(f"shiftlab/{design['behaviour']}", 22),
        created=created,
        task=f"shiftlab/{design['behaviour']}",
        model=design["model"],
        dataset=log.EvalDataset(
            name=design["behaviour"], samples=evals.height, sample_ids=evals["sample_id"].to_list()
        ),
        config=log.EvalConfig(epochs=1),
        metadata={k: design[k] for k in (*DESIGN_KEYS, "kind", "artefact_id")},
    )
    return log.EvalLog(
        status="success",
        eval=spec,
        results=log.EvalResults(
            total_samples=evals.height, completed_samples=evals.height, scores=[score]
        ),
        samples=samples,
    )


def _base_behaviour(artefact_id: str, base: str) -> str | None:
    """The behaviour in a base evaluation's id, ``<base>__<behaviour>__<hash>``."""
    prefix = artefact_id.rsplit("__", 1)[0]
    return prefix[len(base) + 2 :] if prefix.startswith(f"{base}__") else None


def _targets(store: Store) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, artefact id, design keys) of every evaluation the store holds."""
    targets: list[tuple[str, str, dict[str, Any]]] = []
    none = dict.fromkeys(DESIGN_KEYS)
    for artefact_id in store.finished_ids("base_evals"):
        base = store.read_manifest("base_evals", artefact_id)["config"]["base"]["name"]
        behaviour = _base_behaviour(artefact_id, base)
        keys = {"base_model": base, "behaviour": behaviour, "arm": "base"}
        targets.append(("base_evals", artefact_id, {**none, **keys}))
    for row in store.read_table(ORGANISM_TABLE).iter_rows(named=True):
        keys = {"organism": row["organism_id"], "base_model": row["base_model"],
                "behaviour": row["behaviour"], "arm": "none", "seed": row["seed"]}  # fmt: skip
        targets.append(("organisms", row["organism_id"], {**none, **keys}))
    design = store.read_table(RUNS_TABLE).filter(pl.col("run_id").is_not_null())
    for row in design.iter_rows(named=True):
        keys = {"organism": row["organism_id"], "base_model": row["base_model"],
                "behaviour": row["behaviour"], "method": row["method"], "arm": row["arm"],
                "k": row["k"], "seed": row["seed"]}  # fmt: skip
        targets.append(("runs", row["run_id"], {**none, **keys}))
    return targets


def export_inspect(
    store: Store | str | os.PathLike[str], out: str | os.PathLike[str]
) -> list[Path]:
    """Write every evaluation in a finished ``store`` as an inspect_ai log under ``out``:
    ``<kind>-<artefact id>.eval`` for each base evaluation, organism and run. Returns the
    paths written.

    Each sample is one eval prompt: ``input`` the prompt, ``output`` the model's reply,
    scores ``verdict`` (misbehaving / aligned / unparseable / excluded, with the rule's
    detail), ``misbehaviour`` (1 or 0, judged outputs only) and ``value`` (the scorer's
    number, where the behaviour has one); the design keys are in the log's and each
    sample's metadata. The log's ``misbehaviour`` mean is the rate in ``eval.parquet``.

    >>> export_inspect("no-such-store", "out")
    Traceback (most recent call last):
    ...
    shiftlab.errors.ShiftlabError: no-such-store: not a shiftlab store (no study.yaml)
    """
    root = Path(store.root if isinstance(store, Store) else store)
    if not (root / "study.yaml").is_file():
        raise ShiftlabError(f"{root}: not a shiftlab store (no study.yaml)")
    opened = store if isinstance(store, Store) else Store.open(root)
    log = _inspect()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    written = []
    export_id = content_hash({"store": str(opened.root.resolve()), "created": created}, 22)
    for kind, artefact_id, keys in _targets(opened):
        evals = opened.read_parquet(kind, artefact_id, "eval.parquet")
        design = {**keys, "kind": kind, "artefact_id": artefact_id, "export_id": export_id,
                  "model": f"shiftlab/{artefact_id}"}  # fmt: skip
        path = folder / f"{kind}-{artefact_id}.eval"
        log.write_eval_log(_log(evals, design, created), str(path))
        written.append(path)
    return written
