"""Experiment tracking: each run's training curve and evaluation metrics, and the study's
attribution tables, in MLflow, Weights & Biases or trackio (``tracking:`` in the spec).

Every run becomes a tracker run named by its artefact id, with the design keys
(organism, base model, behaviour, method, arm, k, seed) as tags; its training log (loss,
gradient norm, learning rate per step) as metric histories; its design-table row
(behaviour and capability before, after and Δ, the shift measures) as final metrics.
The study's attribution tables go to one more run, ``<study>-attribution``, as table
artefacts. The tracker is imported only when a spec asks for it.

Tracking never fails a study: the first error from the tracker prints one warning line
and the rest of the tracking is skipped. A run already logged (MLflow: a run of the same
name in the experiment) is not logged again, so a resumed study logs only what is new.

>>> from shiftlab.spec import TrackingSpec
>>> track_study("no-such-store", TrackingSpec())  # kind: none does nothing
0
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from shiftlab.spec import TrackingSpec
from shiftlab.store import RUNS_TABLE, Store

DESIGN_TAGS = ("organism_id", "base_model", "behaviour", "method", "arm", "k", "seed")
CURVE = ("loss", "grad_norm", "lr")
# Design-table columns logged as each run's final metrics, where present.
RESULTS = (
    "behaviour_before", "behaviour_after", "delta", "capability_before", "capability_after",
    "capability_delta", "n_train", "shift_nll_gap", "shift_mmd", "shift_mmd_p",
    "shift_c2st_auc", "shift_energy", "output_shift_mmd",
)  # fmt: skip
INSTALL = {"mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio"}


class Tracker(Protocol):
    """What each tracker does for shiftlab."""

    def logged(self, name: str) -> bool:
        """Whether a run of this name is already in the tracker."""

    def start(self, name: str, tags: Mapping[str, str], config: Mapping[str, Any]) -> None:
        """Begin a run."""

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics (at ``step`` for a curve)."""

    def table(self, name: str, frame: pl.DataFrame) -> None:
        """Log a table as an artefact of the current run."""

    def finish(self) -> None:
        """End the current run."""


class _MLflow:
    def __init__(self, spec: TrackingSpec, study: str) -> None:
        import mlflow

        self.mlflow = mlflow
        if spec.uri:
            if "://" not in spec.uri or spec.uri.startswith("file:"):
                # A folder is MLflow's file store, which MLflow 3 runs only when asked to.
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            elif spec.uri.startswith(("http://", "https://")):
                # MLflow retries a server for minutes by default; a study should not wait
                # that long to print its one warning (the user's own settings win).
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
            mlflow.set_tracking_uri(spec.uri)
        self.experiment = mlflow.set_experiment(spec.project or study).experiment_id

    def logged(self, name: str) -> bool:
        runs = self.mlflow.search_runs(
            [self.experiment], filter_string=f"tags.`mlflow.runName` = '{name}'",
            output_format="list", max_results=1,
        )  # fmt: skip
        return bool(runs)

    def start(self, name: str, tags: Mapping[str, str], config: Mapping[str, Any]) -> None:
        self.mlflow.start_run(run_name=name, tags=dict(tags))
        if config:
            self.mlflow.log_params(dict(config))

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics(dict(metrics), step=step)

    def table(self, name: str, frame: pl.DataFrame) -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{name}.csv"
            _flat(frame).write_csv(path)
            self.mlflow.log_artifact(str(path), artifact_path="attribution")

    def finish(self) -> None:
        self.mlflow.end_run()


class _Wandb:
    def __init__(self, spec: TrackingSpec, study: str) -> None:
        import wandb

        self.wandb, self.spec, self.project = wandb, spec, spec.project or study
        self.run: Any = None

    def logged(self, name: str) -> bool:
        return False  # each run has a fixed id: logging it again resumes it

    def start(self, name: str, tags: Mapping[str, str], config: Mapping[str, Any]) -> None:
        self.run = self.wandb.init(
            project=self.project, entity=self.spec.entity, name=name, id=_wandb_id(name),
            resume="allow", mode=self.spec.mode, dir=self.spec.dir,
            config={**tags, **config}, tags=_short_tags(tags),
            reinit="finish_previous", settings=self.wandb.Settings(silent=True),
        )  # fmt: skip

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.run.log(dict(metrics), step=step)

    def table(self, name: str, frame: pl.DataFrame) -> None:
        flat = _flat(frame)
        columns: list[str | int] = list(flat.columns)
        self.run.log({name: self.wandb.Table(columns=columns, data=flat.rows())})

    def finish(self) -> None:
        self.run.finish()


class _Trackio:
    def __init__(self, spec: TrackingSpec, study: str) -> None:
        if spec.dir:
            os.environ.setdefault("TRACKIO_DIR", spec.dir)
        import trackio

        self.trackio, self.project = trackio, spec.project or study

    def logged(self, name: str) -> bool:
        return False

    def start(self, name: str, tags: Mapping[str, str], config: Mapping[str, Any]) -> None:
        self.trackio.init(project=self.project, name=name, group=tags.get("organism_id"),
                          config={**tags, **config}, resume="allow")  # fmt: skip

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.trackio.log(dict(metrics), step=step)

    def table(self, name: str, frame: pl.DataFrame) -> None:
        import pandas as pd

        rows = pd.DataFrame(_flat(frame).to_dict(as_series=False))  # needs no pyarrow
        self.trackio.log({name: self.trackio.Table(dataframe=rows)})

    def finish(self) -> None:
        self.trackio.finish()


TRACKERS: dict[str, Callable[[TrackingSpec, str], Tracker]] = {
    "mlflow": _MLflow, "wandb": _Wandb, "trackio": _Trackio,
}  # fmt: skip


def _short_tags(tags: Mapping[str, str]) -> list[str]:
    """wandb's tags, ``key=value``, only those within its 64 characters (every key is in
    the run's config as well)."""
    return [t for t in (f"{k}={v}" for k, v in tags.items()) if len(t) <= 64]


def _wandb_id(name: str) -> str:
    from shiftlab._hashing import content_hash

    return content_hash(name)[:32]


def _flat(frame: pl.DataFrame) -> pl.DataFrame:
    """A table with only scalar columns (lists and structs as text), for CSV and trackers."""
    nested = [c for c, t in frame.schema.items() if t.is_nested()]
    return frame.with_columns(pl.col(c).cast(pl.String, strict=False) for c in nested) if nested \
        else frame  # fmt: skip


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def warn(kind: str, error: BaseException) -> None:
    """The one line a tracking failure prints."""
    text = " ".join(str(error).splitlines()) or type(error).__name__
    print(f"shiftlab: warning: tracking ({kind}) failed, the study is unaffected: {text}",
          file=sys.stderr)  # fmt: skip


def _log_run(tracker: Tracker, store: Store, row: dict[str, Any]) -> None:
    tags = {k: str(row[k]) for k in DESIGN_TAGS if row.get(k) is not None}
    tracker.start(row["run_id"], {**tags, "shiftlab.artefact_id": row["run_id"]}, {})
    curve = store.read_parquet("runs", row["run_id"], "train_log.parquet")
    for step in curve.select("step", *[c for c in CURVE if c in curve.columns]).iter_rows(
        named=True
    ):
        values = {f"train/{k}": v for k, v in step.items() if k != "step"}
        metrics = {k: n for k, v in values.items() if (n := _number(v)) is not None}
        if metrics:
            tracker.log(metrics, step=int(step["step"]))
    final = {f"eval/{k}": n for k in RESULTS if (n := _number(row.get(k))) is not None}
    if final:
        tracker.log(final)
    tracker.finish()


def track_study(
    store: Store | str | os.PathLike[str],
    spec: TrackingSpec,
    *,
    study: str = "study",
    tables: Callable[[], Mapping[str, pl.DataFrame]] | None = None,
) -> int:
    """Log every run of a finished study to the tracker ``spec`` names, then the
    attribution ``tables`` (a callable, so they are only computed when tracking is on);
    ``study`` is the experiment or project when the spec names none. Returns how many
    runs were logged; a tracker error prints one warning line and returns what was
    logged before it."""
    if spec.kind == "none":
        return 0
    done = 0
    tracker: Tracker | None = None
    try:
        tracker = TRACKERS[spec.kind](spec, study)
        opened = store if isinstance(store, Store) else Store.open(store)
        design = opened.read_table(RUNS_TABLE).filter(pl.col("run_id").is_not_null())
        for row in design.sort("run_id").iter_rows(named=True):
            if not tracker.logged(row["run_id"]):
                _log_run(tracker, opened, row)
                done += 1
        if tables is not None:
            name = f"{study}-attribution"
            if not tracker.logged(name):
                computed = tables()
                tracker.start(name, {"shiftlab.study": study}, {})
                for table, frame in computed.items():
                    tracker.table(table, frame)
                tracker.finish()
    except ImportError as error:
        missing = (error.name or "").split(".")[0] == spec.kind
        hint = f"; pip install 'shiftlab[{INSTALL[spec.kind]}]'" if missing else ""
        warn(spec.kind, ImportError(f"{error}{hint}"))
        _close(tracker)
    except Exception as error:  # any tracker failure: one line, never the study's failure
        warn(spec.kind, error)
        _close(tracker)
    return done


def _close(tracker: Tracker | None) -> None:
    """End a run a failure left open, quietly: the failure was already reported."""
    if tracker is not None:
        with contextlib.suppress(Exception):  # already broken, and already reported
            tracker.finish()
