"""Scale-out: run a study's stage graph on SLURM (submitit) or Ray.

The submitting process walks the stage graph (:func:`shiftlab.study.stage_graph`):
each unit — a phase-1 artefact, or one organism's pools, runs or shift — is submitted as
soon as the units it waits for are finished, as a SLURM job array (``submitit``: every
unit ready at that moment in one array) or as Ray tasks (``ray``). A job carries the spec
and the store's path, never a model or a tensor; the worker claims each artefact through
the store's leases, skips what is finished, and writes its results into the store. A job
that dies (killed, preempted, out of memory) is submitted again up to ``retries`` times;
its leases expire and the new job takes over, keeping what the dead one finished.

Before anything is submitted, :func:`check_executor` refuses a missing engine (naming
the extra to install), a request the cluster cannot satisfy, and a store the workers
cannot see.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from shiftlab.errors import ShiftlabError, SpecError
from shiftlab.spec import EXECUTORS, ExecutorSpec
from shiftlab.store import Store

_EXTRAS = {"submitit": ("submitit", "slurm"), "ray": ("ray", "ray")}
# File systems a job on another node cannot see.
LOCAL_FILESYSTEMS = {"tmpfs", "ramfs", "overlay", "devtmpfs"}
POLL_SECONDS = 1.0


class ExecutorError(ShiftlabError):
    """A job failed on the executor (after its retries), or the executor cannot start."""


# -- checks before submission ------------------------------------------------------------


def _require(kind: str) -> None:
    module, extra = _EXTRAS[kind]
    if importlib.util.find_spec(module) is None:
        raise ExecutorError(
            f"executor {kind!r} needs {module}, which is not installed: "
            f"pip install 'shiftlab[{extra}]'"
        )


def _filesystem(path: Path) -> str:
    """The type of the file system ``path`` is on (from /proc/mounts; '' if unknown)."""
    best, kind = "", ""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    resolved = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3:
            point = parts[1]
            inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
            if inside and len(point) > len(best):
                best, kind = point, parts[2]
    return kind


def _parse_time(text: str) -> int | None:
    """SLURM's time limit ``[days-]hours:minutes:seconds`` in minutes (None: unlimited)."""
    if text in ("infinite", "UNLIMITED", "n/a"):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts
    return (int(days or 0) * 24 + hours) * 60 + minutes + (seconds > 0)


def _gpus(gres: str) -> int:
    """GPUs in a node's GRES (``gpu:a100:8(S:0-1)``, ``gpu:8``, ``gpu:a100``, or several)."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu":
            total += int(parts[-1]) if parts[-1].isdigit() else 1
    return total


def slurm_nodes() -> dict[str, list[dict[str, Any]]]:
    """Each SLURM partition's usable nodes (not down or drained): cpus, memory (GB),
    GPUs and the partition's time limit (minutes; None when unlimited)."""
    result = subprocess.run(
        ["sinfo", "--Node", "--exact", "--noheader", "--format", "%P|%c|%m|%G|%l|%t"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise ExecutorError(f"sinfo failed: {result.stderr.strip() or result.returncode}")
    partitions: dict[str, list[dict[str, Any]]] = {}
    for number, line in enumerate(result.stdout.splitlines(), 1):
        try:
            name, cpus, memory, gres, limit, state = line.strip().split("|")
            node = {"cpus": int(cpus), "mem_gb": int(memory) / 1024, "gpus": _gpus(gres),
                    "time_min": _parse_time(limit), "default": name.endswith("*")}  # fmt: skip
        except ValueError:
            raise ExecutorError(f"sinfo line {number}: cannot read {line.strip()!r}") from None
        nodes = partitions.setdefault(name.rstrip("*"), [])
        if not state.rstrip("*~#!%$@^-").startswith(("down", "drain", "fail", "maint")):
            nodes.append(node)
    return partitions


def _check_slurm(config: ExecutorSpec, store: Store) -> None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise ExecutorError(
            "executor 'submitit' with cluster 'slurm' needs sbatch and sinfo on PATH (a SLURM "
            "login node); set executor.cluster: local to run the jobs on this machine"
        )
    partitions = slurm_nodes()
    if config.slurm_partition is not None:
        if config.slurm_partition not in partitions:
            raise SpecError(
                f"executor.slurm_partition: no partition {config.slurm_partition!r}; "
                f"this cluster has {', '.join(sorted(partitions))}"
            )
        name = config.slurm_partition
    else:
        name = next((n for n, nodes in partitions.items() if any(d["default"] for d in nodes)),
                    "")  # fmt: skip
        if not name:
            raise SpecError("executor.slurm_partition: required (this cluster has no default)")
    nodes = partitions[name]
    if not nodes:
        raise SpecError(f"executor.slurm_partition: every node of {name!r} is down or drained")
    asked = {"cpus_per_job": (config.cpus_per_job, "cpus"), "mem_gb": (config.mem_gb, "mem_gb"),
             "gpus_per_job": (config.gpus_per_job, "gpus")}  # fmt: skip
    fits = [n for n in nodes if all(n[key] >= wanted for wanted, key in asked.values())]
    if not fits:
        most = {field: max(n[key] for n in nodes) for field, (_, key) in asked.items()}
        short = [f for f, (wanted, _) in asked.items() if wanted > most[f]] or list(asked)
        field = short[0]
        raise SpecError(
            f"executor.{field}: {asked[field][0]:g} cannot be satisfied in partition {name!r} "
            f"together with the rest of the request (no node offers cpus_per_job="
            f"{config.cpus_per_job}, mem_gb={config.mem_gb:g}, gpus_per_job="
            f"{config.gpus_per_job}; the largest offer {most['cpus_per_job']:g} CPUs, "
            f"{most['mem_gb']:g} GB, {most['gpus_per_job']:g} GPUs)"
        )
    limit = nodes[0]["time_min"]
    if limit is not None and config.timeout_min > limit:
        raise SpecError(
            f"executor.timeout_min: {config.timeout_min} cannot be satisfied in partition "
            f"{name!r} (its time limit is {limit} minutes)"
        )
    for what, folder in (("store", store.root), ("executor.folder", _job_folder(config, store))):
        kind = _filesystem(folder)
        resolved = str(folder.resolve())
        if kind in LOCAL_FILESYSTEMS or resolved == "/tmp" or resolved.startswith("/tmp/"):
            raise ExecutorError(
                f"{what} {folder} is on this machine only ({kind or '/tmp'}); SLURM jobs on "
                "other nodes cannot see it: put it on a shared file system"
            )


def _job_folder(config: ExecutorSpec, store: Store) -> Path:
    """Where submitit keeps jobs' pickles and logs (default ``<store>/.submitit``)."""
    return Path(config.folder) if config.folder else store.root / ".submitit"


def private_job_folder(folder: Path) -> Path:
    """Create ``folder`` readable and writable by this user only, or check that it is.

    submitit's job and result files are pickles that every job unpickles: whoever can
    write into the folder could run code in every job, so a folder that is another
    user's, or that its group or others may write to, is refused.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise ExecutorError(
            f"executor.folder {folder}: owned by another user; submitit's job files are "
            "pickles that jobs unpickle, so the folder must be your own"
        )
    if info.st_mode & 0o022:
        raise ExecutorError(
            f"executor.folder {folder}: writable by others (mode {info.st_mode & 0o777:o}); "
            f"submitit's job files are pickles that jobs unpickle: chmod go-w {folder}"
        )
    return folder


def _check_ray(config: ExecutorSpec, store: Store) -> None:
    import ray

    resources = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    most_cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
    most_gpus = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
    if config.cpus_per_job > most_cpus:
        raise SpecError(
            f"executor.cpus_per_job: {config.cpus_per_job} cannot be satisfied: the Ray "
            f"cluster's largest node has {most_cpus:g} CPUs"
        )
    if config.gpus_per_job > most_gpus:
        raise SpecError(
            f"executor.gpus_per_job: {config.gpus_per_job} cannot be satisfied: the Ray "
            f"cluster has {resources.get('GPU', 0):g} GPUs, at most {most_gpus:g} on a node"
        )
    _probe_ray_nodes(store, nodes)


def _sees_marker(root: str, name: str, token: str) -> bool:
    marker = Path(root) / name
    return marker.is_file() and marker.read_text() == token and os.access(root, os.W_OK)


def _probe_ray_nodes(store: Store, nodes: list[dict[str, Any]]) -> None:
    """Every Ray node must see this very store (a marker file written here)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    name = f".probe-{token[:12]}"
    (store.root / name).write_text(token)
    try:
        probe = ray.remote(num_cpus=0)(_sees_marker)
        checks = {
            probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(store.root.resolve()), name, token): n
            for n in nodes
        }
        ready, late = ray.wait(list(checks), num_returns=len(checks), timeout=120)
        blind = [f"{checks[r]['NodeManagerAddress']} ({checks[r]['NodeID'][:8]})"
                 for r in late]  # fmt: skip
        for ref in ready:
            try:
                seen = ray.get(ref)
            except ray.exceptions.RayError as error:
                raise ExecutorError(
                    f"Ray node {checks[ref]['NodeManagerAddress']} cannot run shiftlab's probe: "
                    f"{_first_line(error)}"
                ) from None
            if not seen:
                blind.append(f"{checks[ref]['NodeManagerAddress']} ({checks[ref]['NodeID'][:8]})")
    finally:
        (store.root / name).unlink(missing_ok=True)
    if blind:
        raise ExecutorError(
            f"store {store.root} is not visible (or not writable) from Ray node(s) "
            f"{', '.join(blind)}: put the store on a file system every node mounts"
        )


# -- engines -----------------------------------------------------------------------------


class _Ray:
    def __init__(self, config: ExecutorSpec, store: Store) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)  # fmt: skip
        _check_ray(config, store)
        self.config = config
        self.build: Callable[..., Any] | None = None
        self.task: Any = None

    def submit(self, build: Callable[..., str | None], args: tuple[Any, ...],
               jobs: list[StageJob]) -> list[Any]:  # fmt: skip
        import ray

        if build is not self.build:
            remote = ray.remote(num_cpus=self.config.cpus_per_job,
                                num_gpus=self.config.gpus_per_job, max_retries=0)  # fmt: skip
            self.build, self.task = build, remote(build)
        return [self.task.remote(*args, j.stage, j.key) for j in jobs]

    def finished(self, handles: list[Any]) -> list[Any]:
        import ray

        ready, _ = ray.wait(handles, num_returns=len(handles), timeout=POLL_SECONDS)
        return ready

    def cancel(self, handles: list[Any]) -> None:
        import ray

        for handle in handles:
            ray.cancel(handle, force=True)

    def result(self, handle: Any) -> str | None:
        import ray

        try:
            outcome: str | None = ray.get(handle)
        except ray.exceptions.RayTaskError as error:
            # The task raised: a bug or a resource error, not a lost worker; do not retry.
            cause = error.cause if error.cause is not None else error
            raise ExecutorError(f"{type(cause).__name__}: {_first_line(cause)}") from None
        except ray.exceptions.RayError as error:  # the worker or its node died
            raise _JobDied(f"{type(error).__name__}: {_first_line(error)}") from None
        return outcome


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class _Submitit:
    def __init__(self, config: ExecutorSpec, store: Store) -> None:
        import submitit

        if config.cluster == "slurm":
            _check_slurm(config, store)
        folder = private_job_folder(_job_folder(config, store))
        self.executor = submitit.AutoExecutor(folder=folder / "%j", cluster=config.cluster)
        parameters: dict[str, Any] = {
            "name": "shiftlab",
            "timeout_min": config.timeout_min,
            "mem_gb": config.mem_gb,
            "cpus_per_task": config.cpus_per_job,
            "gpus_per_node": config.gpus_per_job,
            "tasks_per_node": 1,
            "nodes": 1,
        }
        if config.cluster == "slurm":
            parameters["slurm_array_parallelism"] = config.parallelism
            if config.slurm_partition:
                parameters["slurm_partition"] = config.slurm_partition
        self.executor.update_parameters(**parameters)

    def submit(self, build: Callable[..., str | None], args: tuple[Any, ...],
               jobs: list[StageJob]) -> list[Any]:  # fmt: skip
        with self.executor.batch():  # one SLURM job array
            handles = [self.executor.submit(build, *args, j.stage, j.key) for j in jobs]
        return handles

    def finished(self, handles: list[Any]) -> list[Any]:
        found = [h for h in handles if h.done()]
        if not found:
            time.sleep(POLL_SECONDS)
        return found

    def cancel(self, handles: list[Any]) -> None:
        for handle in handles:
            handle.cancel(check=False)

    def result(self, handle: Any) -> str | None:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            outcome: str | None = handle.result()
        except UncompletedJobError as error:  # killed, preempted, timed out: retry
            raise _JobDied(f"job {handle.job_id}: {_first_line(error)}") from None
        except FailedJobError as error:  # the job raised: report it, do not retry
            trace = [line for line in str(error).splitlines() if line.strip()]
            last = next((line for line in reversed(trace) if "Error" in line), _first_line(error))
            raise ExecutorError(
                f"job {handle.job_id}: {last.strip()} (log: {handle.paths.stderr})"
            ) from None
        return outcome


class _JobDied(Exception):
    """A job ended without a result (killed, preempted, crashed)."""


def check_executor(kind: str) -> None:
    """Raise before anything runs if ``kind`` is unknown or its engine is not installed."""
    if kind not in EXECUTORS:
        raise SpecError(f"executor: expected one of {', '.join(EXECUTORS)}, got {kind!r}")
    if kind != "local":
        _require(kind)


@dataclass(frozen=True)
class StageJob:
    """One unit an executor runs: a ``stage`` of the study and the ``key`` its builder
    takes (an organism id), and the units (by :attr:`name`) it waits for. It names only
    ids: a job rebuilds everything else from the spec and the store."""

    stage: str
    key: str
    after: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.stage}:{self.key}"


def run_stage_graph(
    graph: Sequence[StageJob],
    *,
    build: Callable[..., str | None],
    args: tuple[Any, ...],
    finished: Callable[[StageJob], bool],
    config: ExecutorSpec,
    store: Store,
    kind: str,
    progress: bool = True,
) -> None:
    """Build every unfinished unit of ``graph`` on the ``kind`` executor (submitit or ray),
    each as soon as the units it waits for are finished; return when all are finished.

    A job runs ``build(*args, stage, key)`` (a module-level function, so the engine can
    send it by reference): None, or the message of an input error, re-raised here as a
    :class:`~shiftlab.errors.ShiftlabError`. ``finished`` says which units the store
    already holds. Executors know nothing of what a unit builds.
    """
    check_executor(kind)
    engines: dict[str, Callable[[ExecutorSpec, Store], Any]] = {"ray": _Ray, "submitit": _Submitit}
    engine = engines[kind](config, store)
    done = {j.name for j in graph if finished(j)}
    waiting = [j for j in graph if j.name not in done]
    running: dict[Any, Any] = {}
    attempts: dict[str, int] = {}
    bar = tqdm(total=len(waiting), desc=f"{kind} jobs", unit="job",
               disable=not progress or not waiting)  # fmt: skip
    try:
        while waiting or running:
            ready = [j for j in waiting if all(d in done for d in j.after)]
            if not ready and not running:
                raise ExecutorError(f"the stage graph is stuck with {len(waiting)} units waiting")
            ready = ready[: max(0, config.parallelism - len(running))]
            if ready:
                for job, handle in zip(ready, engine.submit(build, args, ready), strict=True):
                    running[handle] = job
                    attempts[job.name] = attempts.get(job.name, 0) + 1
                waiting = [j for j in waiting if j not in ready]
            for handle in engine.finished(list(running)):
                job = running.pop(handle)
                try:
                    error = engine.result(handle)
                except ExecutorError as failed:
                    raise ExecutorError(f"{job.name}: {failed}") from None
                except _JobDied as died:
                    if attempts[job.name] > config.retries:
                        raise ExecutorError(
                            f"{job.name}: the job died {attempts[job.name]} times; last: {died}"
                        ) from None
                    waiting.append(job)  # its leases expire; the new job takes over
                    continue
                if error is not None:  # an input error inside the job: the user's to fix
                    raise ShiftlabError(f"{job.name}: {error}")
                done.add(job.name)
                bar.update()
    except BaseException:
        engine.cancel(list(running))  # finished artefacts stay; the rest resumes next time
        raise
    finally:
        bar.close()
