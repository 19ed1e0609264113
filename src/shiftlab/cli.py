"""The ``shiftlab`` command line: a thin layer over the Python API.

Errors caused by input (a bad spec, a missing file, an unwritable store) print one line
and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from shiftlab._version import __version__
from shiftlab.errors import NotebookError, ShiftlabError, SpecError, Terminated

# The packaged specs ``shiftlab demo --scale`` runs.
DEMO_SPECS = {"demo": "demo.yaml", "paper": "paper.yaml"}


WORKERS_HELP = (
    "processes that build the study together (default auto: one per CPU core on a "
    "CPU-only machine, one with a GPU); results do not depend on it"
)


SET_HELP = (
    "override one spec field, e.g. runs.training.steps=20 or behaviours.0.induction.steps=5 "
    "(VALUE is read as YAML); repeatable, validated like the spec"
)
FORCE_HELP = "run a study above the ceiling on training size (a typo in steps, usually)"
EXECUTOR_HELP = (
    "where jobs run (default: the spec's executor.kind, else local): local worker processes, "
    "SLURM job arrays through submitit, or Ray tasks"
)


# One example per command, shown at the end of its --help.
EXAMPLES = {
    "demo": "shiftlab demo --out runs/demo",
    "run": "shiftlab run study.yaml --store runs/study --set runs.training.steps=20",
    "validate": "shiftlab validate study.yaml --set organisms.seeds=[0,1,2]",
    "report": "shiftlab report runs/demo --out runs/demo-report",
    "repro": "shiftlab repro record runs/demo",
    "repro record": "shiftlab repro record runs/demo",
    "repro check": "shiftlab repro check runs/demo --sample 3",
    "notebook": "shiftlab notebook notebooks/02_attribution.ipynb -p store=runs/demo",
    "status": "shiftlab status runs/demo --json",
    "export": "shiftlab export inspect runs/demo runs/demo-logs",
    "export inspect": "shiftlab export inspect runs/demo runs/demo-logs",
    "compare": "shiftlab compare organism.eval run.eval --cluster group",
    "data": "shiftlab data fetch consistency-misalignment",
    "data list": "shiftlab data list",
    "data fetch": "shiftlab data fetch consistency-misalignment --from ~/copies",
}


def _command_parser(
    commands: Any, name: str, summary: str, parents: list[argparse.ArgumentParser], path: str = ""
) -> argparse.ArgumentParser:
    """A subcommand whose help has a one-line description and an example."""
    return commands.add_parser(
        name, help=summary, description=f"{summary[0].upper()}{summary[1:]}.",
        epilog=f"example:\n  {EXAMPLES[f'{path}{name}']}", parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip


def _workers(text: str) -> int | str:
    if text == "auto":
        return text  # resolved when there is work: it asks torch for a GPU
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    from shiftlab.spec import EXECUTORS

    parser = argparse.ArgumentParser(
        prog="shiftlab",
        description="Selection or distribution shift? Consistency-training ablations.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"shiftlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, summary: str) -> argparse.ArgumentParser:
        return _command_parser(commands, name, summary, [common])

    demo = add("demo", "run the toyworld demo study")
    demo.add_argument(
        "--scale",
        choices=sorted(DEMO_SPECS),
        default="demo",
        help="demo: a small study (minutes); paper: 108 organisms, every method and arm",
    )
    demo.add_argument("--out", help="store folder (default: runs/<scale>)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.add_argument("--workers", type=_workers, default="auto", help=WORKERS_HELP)
    demo.add_argument("--executor", choices=EXECUTORS, help=EXECUTOR_HELP)

    run = add("run", "run a study spec")
    run.add_argument("spec", help="study spec (YAML)")
    run.add_argument("--store", help="store folder (overrides the spec's 'store')")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--workers", type=_workers, default="auto", help=WORKERS_HELP)
    run.add_argument("--executor", choices=EXECUTORS, help=EXECUTOR_HELP)
    run.add_argument(
        "--rebuild",
        action="store_true",
        help="check every file's sha256 first and delete what is damaged, so it is built again",
    )
    run.add_argument("--force", action="store_true", help=FORCE_HELP)
    run.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help=SET_HELP)

    validate = add("validate", "check a study spec without running it")
    validate.add_argument("spec", help="study spec (YAML)")
    validate.add_argument("--force", action="store_true", help=FORCE_HELP)
    validate.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help=SET_HELP)

    report = add("report", "run every attribution analysis and write report.html")
    report.add_argument("store", help="store folder of a finished study")
    report.add_argument(
        "--n-boot", type=int, default=2000,
        help="cluster-bootstrap draws for mediation (default 2000)",
    )  # fmt: skip
    report.add_argument("--out", help="folder for the report (default: the store itself)")
    report.add_argument(
        "--min-organisms", type=int,
        help="organisms a verdict needs (default 6: the fewest at which a sign-flip test "
        "can reach p < 0.05)",
    )  # fmt: skip

    repro = add("repro", "record a store's fingerprints, or check that it reproduces")
    repro_commands = repro.add_subparsers(dest="repro_command", required=True)
    record = _command_parser(
        repro_commands, "record", "fingerprint every artefact (repro/fingerprints.json)",
        [common], "repro ",
    )  # fmt: skip
    record.add_argument("store", help="store folder of a finished study")
    record.add_argument("--force", action="store_true", help="replace an existing record")
    check = _command_parser(
        repro_commands, "check",
        "re-execute a sample of runs in a scratch store and compare with the record",
        [common], "repro ",
    )  # fmt: skip
    check.add_argument("store", help="store folder with recorded fingerprints")
    which = check.add_mutually_exclusive_group()
    which.add_argument("--sample", type=_positive, default=3, help="runs to re-execute (default 3)")
    which.add_argument("--all", action="store_true", help="re-execute every recorded run")
    check.add_argument("--seed", type=int, default=0, help="which runs are drawn (default 0)")
    check.add_argument(
        "--scratch",
        help="re-execute into this new or empty folder and keep it (default: a temporary one)",
    )
    check.add_argument(
        "--loss-atol", type=float, default=1e-3, help="largest per-step loss difference"
    )
    check.add_argument("--no-progress", action="store_true", help="hide progress bars")

    notebook = add("notebook", "execute a notebook headless with parameters")
    notebook.add_argument("notebook", help="the notebook (.ipynb)")
    notebook.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a parameter; repeatable. Text parameters take VALUE as it is (a relative "
        "path with a '/' is resolved against the current folder); others read it as YAML "
        "(3, 0.5, true, null)",
    )
    notebook.add_argument("--out", help="write the executed notebook here")

    status = add("status", "what is finished and what is left in a store")
    status.add_argument("store", help="store folder")
    status.add_argument(
        "--verify", action="store_true", help="check every file's sha256, not only its size"
    )
    status.add_argument(
        "--json", action="store_true", help="print one JSON object (per stage: finished, left)"
    )

    export = add("export", "write a store's evaluations in another tool's format")
    export_commands = export.add_subparsers(dest="export_command", required=True)
    to_inspect = _command_parser(
        export_commands, "inspect",
        "one inspect_ai .eval log per run, organism and base evaluation", [common], "export ",
    )  # fmt: skip
    to_inspect.add_argument("store", help="store folder of a finished study")
    to_inspect.add_argument("out", help="folder for the logs (`inspect view --log-dir OUT`)")

    compare = add("compare", "paired difference between two evaluations of the same samples")
    compare.add_argument("a", help="the baseline: an inspect_ai log (.eval or .json)")
    compare.add_argument("b", help="the comparison: an inspect_ai log on the same samples")
    compare.add_argument(
        "--metric", help="the score to compare (default: the only numeric score both have)"
    )
    compare.add_argument(
        "--cluster",
        help="a sample metadata field grouping correlated samples (default: the sample id)",
    )
    compare.add_argument("--json", action="store_true", help="print the result row as JSON")

    data = add("data", "public behaviour datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    _command_parser(data_commands, "list", "list the datasets shiftlab can fetch", [common],
                    "data ")  # fmt: skip
    fetch = _command_parser(
        data_commands, "fetch", "download a dataset, or copy a local one (checksums verified)",
        [common], "data ",
    )  # fmt: skip
    fetch.add_argument("name", help="dataset name (see `shiftlab data list`)")
    fetch.add_argument(
        "--to", help="parent folder (default: $SHIFTLAB_DATA or ~/.cache/shiftlab/data)"
    )
    source = fetch.add_mutually_exclusive_group()
    source.add_argument("--base-url", help="a mirror to download from instead of upstream")
    source.add_argument(
        "--from",
        dest="source",
        metavar="DIR",
        help="copy from a local copy instead of downloading (offline; DIR holds <name>/)",
    )
    fetch.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _demo_spec_text(scale: str = "demo") -> str:
    return (resources.files("shiftlab") / "specs" / DEMO_SPECS[scale]).read_text()


def _print_organisms(table: object) -> None:
    import polars as pl

    assert isinstance(table, pl.DataFrame)
    shown = table.select(
        "behaviour",
        "seed",
        pl.col("base_rate").round(3),
        pl.col("organism_rate").round(3),
        pl.format("[{}, {}]", pl.col("ci_low").round(2), pl.col("ci_high").round(2)).alias(
            "organism_95ci"
        ),
        "n_eval",
        pl.col("base_capability").round(3),
        pl.col("organism_capability").round(3),
    ).sort("behaviour", "seed")
    with pl.Config(tbl_rows=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(shown)


def _print_deltas(design: Any) -> None:
    import polars as pl

    from shiftlab._finished import summarise_deltas
    from shiftlab.spec import ARMS

    summary = summarise_deltas(design)
    for values, title in (
        ("mean_delta", "behaviour rate after training minus the organism's"),
        ("mean_capability_delta", "capability accuracy after training minus the organism's"),
    ):
        wide = summary.pivot(on="arm", index=["behaviour", "method"], values=values)
        arms = [a for a in ARMS if a in wide.columns]
        print(f"mean {'capability ' if 'capability' in values else ''}delta ({title}):")
        with pl.Config(tbl_rows=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
            print(wide.select("behaviour", "method", *[pl.col(a).round(3) for a in arms]))


def _run(
    spec_path: str | None,
    store_path: str | None,
    progress: bool,
    workers: int | str,
    *,
    executor: str | None = None,
    demo: str | None = None,
    rebuild: bool = False,
    force: bool = False,
    overrides: Sequence[str] = (),
) -> int:
    """Run a study, or, when the store holds it finished as its last run left it (and no
    tracker is to be told), print its tables without loading the study or torch."""
    import yaml

    from shiftlab._finished import study_is_finished
    from shiftlab.spec import check_size, load_spec, parse_spec
    from shiftlab.store import ORGANISM_TABLE, RUNS_TABLE, Store

    start = time.perf_counter()
    if demo:
        spec = parse_spec(
            yaml.safe_load(_demo_spec_text(demo)), f"<package>/specs/{DEMO_SPECS[demo]}"
        )
        store_path = store_path or f"runs/{demo}"
    else:
        assert spec_path is not None
        spec = load_spec(spec_path, overrides=overrides)
        check_size(spec, spec_path, force=force)
    store_path = store_path or spec.store
    if store_path is None:
        raise SpecError(f"{spec_path}: store: is required (or pass --store)")
    store = Store.open(store_path)
    _check_store(store, rebuild=rebuild)
    if executor is not None:
        from shiftlab.executors import check_executor

        check_executor(executor)  # a missing engine is an error even with nothing to do
    if not rebuild and spec.tracking.kind == "none" and study_is_finished(store, spec.to_yaml()):
        table = store.read_table(RUNS_TABLE if spec.methods else ORGANISM_TABLE)
    else:
        from shiftlab._workers import default_workers
        from shiftlab.study import run_study

        workers = default_workers() if workers == "auto" else int(workers)
        table = run_study(spec, store, progress=progress, workers=workers, executor=executor)
    _print_organisms(store.read_table(ORGANISM_TABLE))
    if spec.methods:
        _print_deltas(table)
        if demo:
            from shiftlab.report import write_report

            print(f"report: {write_report(store)}")
    print(f"store: {store.root}  ({time.perf_counter() - start:.1f} s)")
    if spec.methods and not demo:
        print(f"next: shiftlab report {store.root}")
    return 0


def _validate(spec_path: str, force: bool, overrides: Sequence[str] = ()) -> int:
    from shiftlab.spec import check_size, load_spec
    from shiftlab.study import load_suites

    spec = load_spec(spec_path, overrides=overrides)
    check_size(spec, spec_path, force=force)
    load_suites(spec)
    counts = ", ".join(
        _count(n, noun)
        for n, noun in (
            (len(spec.base_models), "base model"), (len(spec.behaviours), "behaviour"),
            (len(spec.organisms.seeds), "seed"), (len(spec.methods), "method"),
            (len(spec.arms), "arm"),
        )
    )  # fmt: skip
    print(f"{spec_path}: ok ({counts})")
    return 0


def _check_store(store: Any, *, rebuild: bool = False) -> None:
    """Refuse a store with damaged files (by their sizes, manifests and caches), naming
    the first; with ``rebuild``, check every sha256 and delete what is damaged instead."""
    from shiftlab._integrity import clear_damage, inspect_store

    found = inspect_store(store, hashes=rebuild)
    if found.note():
        print(found.note(), file=sys.stderr)
    if rebuild:
        for removed in clear_damage(store, found.damage):
            print(f"damaged, deleted to be built again: {removed}")
        return
    found.refuse(store)


def _status(store_path: str, verify: bool, as_json: bool = False) -> int:
    """Print what is finished and what is left; exit 1 while work is left, 0 when the
    study is finished (2 for a damaged store, as for every command)."""
    import json

    from shiftlab._integrity import inspect_store
    from shiftlab.spec import load_spec
    from shiftlab.study import study_status

    store = _open_existing(store_path)
    found = inspect_store(store, hashes=verify)
    damaged = {d.artefact for d in found.damage if d.artefact is not None}
    stages: dict[str, dict[str, Any]] = {}
    if all(d.path != store.root / "study.yaml" for d in found.damage):
        status = study_status(store, load_spec(store.root / "study.yaml"), damaged=damaged)
        for (stage,), group in status.group_by("stage", maintain_order=True):
            left = group.filter(~group["finished"])["artefact_id"].to_list()
            stages[str(stage)] = {"finished": group.height - len(left), "total": group.height,
                                  "left": left}  # fmt: skip
    finished = all(not stage["left"] for stage in stages.values()) and not found.damage
    if as_json:
        print(json.dumps({"store": str(store.root), "finished": finished, "stages": stages,
                          "damaged": [d.line for d in found.damage]}))  # fmt: skip
    else:
        for stage, counts in stages.items():
            print(f"{stage}: {counts['finished']}/{counts['total']} finished")
            for artefact_id in counts["left"]:
                print(f"  left: {artefact_id}")
        for damage in found.damage:
            print(damage.line)
        if found.note():
            print(found.note())
    found.refuse(store)
    return 0 if finished else 1


def _report(store_path: str, n_boot: int, out: str | None, min_organisms: int | None) -> int:
    from shiftlab.report import write_report
    from shiftlab.store import Store

    root = Path(store_path)
    if not (root / "study.yaml").is_file() and not (root / "tables").is_dir():
        raise ShiftlabError(f"{root}: not a shiftlab store (no study.yaml)")
    store = Store.open(root)
    _check_store(store)
    verdicts = {} if min_organisms is None else {"min_organisms": min_organisms}
    page = write_report(store, out=out, n_boot=n_boot, **verdicts)
    print(f"report: {page}")
    return 0


def _open_existing(store_path: str) -> Any:
    from shiftlab.store import Store

    root = Path(store_path)
    if not (root / "study.yaml").is_file():
        raise ShiftlabError(f"{root}: not a shiftlab store (no study.yaml)")
    return Store.open(root)


def _repro(args: argparse.Namespace) -> int:
    from shiftlab.repro import Tolerances, check_reproduction, record_fingerprints

    store = _open_existing(args.store)
    if args.repro_command == "record":
        print(f"fingerprints: {record_fingerprints(store, force=args.force)}")
        return 0
    report = check_reproduction(
        store,
        sample=None if args.all else args.sample,
        seed=args.seed,
        scratch=args.scratch,
        tolerances=Tolerances(loss_atol=args.loss_atol),
        progress=not args.no_progress,
    )
    print(report.format())
    return 0 if report.ok else 1


def _notebook_value(default: Any, text: str) -> Any:
    """A ``-p`` value: text for a text parameter (a relative path with a '/' resolved
    against the current folder, not the notebook's), YAML otherwise (3, 0.5, true, null)."""
    import yaml

    if isinstance(default, str):
        looks_like_path = "/" in text and not Path(text).is_absolute()
        return str(Path(text).resolve()) if looks_like_path else text
    return yaml.safe_load(text)


def _notebook(args: argparse.Namespace) -> int:
    from shiftlab.notebooks import execute_notebook, notebook_parameters

    defaults = notebook_parameters(args.notebook) if args.param else {}
    parameters = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise SpecError(f"--param {item!r}: expected NAME=VALUE")
        parameters[name] = _notebook_value(defaults.get(name), value)
    start = time.perf_counter()
    execute_notebook(args.notebook, args.out, parameters=parameters)
    where = f"; executed notebook: {args.out}" if args.out else ""
    print(f"{args.notebook}: every cell ran ({time.perf_counter() - start:.1f} s){where}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from shiftlab.interop import export_inspect

    store = _open_existing(args.store)
    _check_store(store)
    written = export_inspect(store, args.out)
    print(
        f"{_count(len(written), 'inspect log')} in {args.out} (inspect view --log-dir {args.out})"
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    import json

    from shiftlab.interop import compare_samples

    for path in (args.a, args.b):
        if not Path(path).is_file():
            raise ShiftlabError(f"{path}: no such inspect log")
    result = compare_samples(
        args.a, args.b, metric=args.metric, cluster=args.cluster,
        labels=(Path(args.a).stem, Path(args.b).stem),
    )  # fmt: skip
    print(json.dumps(result.frame.row(0, named=True)) if args.json else result.line)
    return 0


def _count(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless ``n`` is 1.

    >>> _count(1, "base model"), _count(2, "base model"), _count(0, "run")
    ('1 base model', '2 base models', '0 runs')
    """
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _data(args: argparse.Namespace) -> int:
    from shiftlab.behaviours import dataset_registry, fetch_dataset

    if args.data_command == "list":
        for name, entry in sorted(dataset_registry().items()):
            size = sum(f["bytes"] for f in entry["files"]) / 2**20
            print(f"{name}  ({len(entry['files'])} files, {size:.1f} MiB, {entry['licence']})")
            print(f"  {entry['description']}")
        return 0
    folder = fetch_dataset(
        args.name, args.to, base_url=args.base_url, source=args.source,
        progress=not args.no_progress,
    )  # fmt: skip
    print(f"{args.name}: {folder}  (a behaviour is source: {folder}/<behaviour>)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shiftlab`` console script."""
    from shiftlab._workers import sigterm_unwinds

    args = _parser().parse_args(argv)
    try:
        with sigterm_unwinds():
            return _command(args)
    except NotebookError as error:
        if args.debug:
            raise
        # Not bad input: the notebook ran and a cell raised (its traceback's end follows).
        print(f"shiftlab: error: {error}", file=sys.stderr)
        return 1
    except ShiftlabError as error:
        if args.debug:
            raise
        # One line, whatever the message quotes (a library's multi-line error text).
        print(f"shiftlab: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shiftlab: interrupted; finished artefacts are kept", file=sys.stderr)
        return 130
    except Terminated:
        print("shiftlab: terminated (SIGTERM); finished artefacts are kept", file=sys.stderr)
        return 143


def _command(args: argparse.Namespace) -> int:
    """Run the parsed subcommand; its exit status."""
    if args.command == "demo":
        return _run(None, args.out, not args.no_progress, args.workers,
                    executor=args.executor, demo=args.scale)  # fmt: skip
    if args.command == "run":
        return _run(args.spec, args.store, not args.no_progress, args.workers,
                    executor=args.executor, rebuild=args.rebuild, force=args.force,
                    overrides=args.set)  # fmt: skip
    if args.command == "validate":
        return _validate(args.spec, args.force, args.set)
    if args.command == "data":
        return _data(args)
    if args.command == "report":
        return _report(args.store, args.n_boot, args.out, args.min_organisms)
    if args.command == "repro":
        return _repro(args)
    if args.command == "notebook":
        return _notebook(args)
    if args.command == "export":
        return _export(args)
    if args.command == "compare":
        return _compare(args)
    return _status(args.store, args.verify, args.json)


if __name__ == "__main__":
    sys.exit(main())
