"""The study report: every attribution analysis of a finished store, its figures, and one
page with the headline finding per behaviour.

``write_report(store)`` writes ``attribution/<analysis>.parquet``, ``figures/<name>.png``
and ``.svg``, ``report.html`` (self-contained: figures embedded) and ``report.md`` into
the store, or into ``out`` when given (the store is then only read).

>>> import tempfile
>>> from shiftlab.attribution import simulate_runs
>>> store = Store.open(tempfile.mkdtemp())
>>> _ = store.write_table("runs", simulate_runs(selection_effect=-0.2, seed=0))
>>> write_report(store, n_boot=200).name
'report.html'
"""

from __future__ import annotations

import base64
import functools
import html
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab import _finished
from shiftlab._files import naming_full_disk, sweep_temporaries, temporaries_of
from shiftlab._lease import Lease
from shiftlab.attribution import (
    MIN_ORGANISMS,
    MOVED,
    attribute,
    decompose,
    eta_curve,
    fit_fixed_effects,
    fit_mixed,
    headline_runs,
    k_scaling,
    mediation,
    method_table,
    sign_tests,
    within,
)
from shiftlab.errors import ShiftlabError, StoreError
from shiftlab.spec import METHOD_FACTS
from shiftlab.store import (
    ORGANISM_TABLE,
    RUNS_TABLE,
    Store,
    atomic_write,
    atomic_write_bytes,
)

MEDIATOR = "shift_mmd"
REPORT_PAGE, REPORT_MARKDOWN = "report.html", "report.md"
# Held while a report is written into a folder (see write_report).
REPORT_LEASE = ".report.lease"
# Arm effects compare SFT arms: paired losses have none, and a one-candidate method's arms
# are the relabeled run itself.
WITHOUT_SFT_ARMS = [
    name
    for name, facts in METHOD_FACTS.items()
    if facts.role == "paired_loss" or facts.one_candidate
]
SIGN_CONVENTION = (
    "Sign convention: Δ is a run's behaviour rate minus its organism's on the same eval "
    "prompts, so a negative Δ means training lowered the misbehaviour and a positive one "
    "that it raised it; a part with the total's sign pushes the same way as the change."
)
CAPABILITY_NOTE = (
    "Capability Δ is a run's accuracy on the capability suite (multiple choice, read from "
    "the answers' log-probabilities) minus its organism's on the same questions; a "
    "behaviour that went down while capability fell may have been suppressed by damaging "
    "the model, and such runs are flagged."
)
ESTIMANDS = (
    "The total change (full − none) splits exactly into selection (full − shuffled) and "
    "label shift (shuffled − none: training on the method's own candidates with the "
    "score→choice link broken); relabeling (relabeled − none) and reference (original − "
    "none) are comparators. Each is a mean over organisms with a 95% sign-flip interval, "
    "inside [−1, 1]. A change is attributed to a part only when the total's interval "
    "excludes 0, the part has the total's sign and its interval excludes 0, and there are "
    "at least {min_organisms} organisms. Consistency training pools the label methods "
    "with a selection step; controls and paired-loss methods have rows of their own."
)
RATE_NOTE = {
    "greedy": "Behaviour rates (before, after and Δ) are over greedy outputs for every "
    "organism and run: one output per prompt, the model's most likely path, which cannot "
    "see a misbehaviour spread thin over variants; each organism's sampled strength is in "
    "the organisms table.",
    "sampled": "Behaviour rates (before, after and Δ) are over {definition} temperature-1 "
    "samples per eval prompt for every organism and run, drawn with the same seeds, so a "
    "Δ measures the change in how likely the model is to misbehave, fragile misbehaviour "
    "included.",
}
ETA_NOTE = (
    "The selection bound limits how far choosing by the score can move the misbehaviour "
    "rate of the training labels (label composition), not the behaviour change after "
    "training, as long as misbehaviour depends on a candidate only through its score bin; "
    "label_selection is that move as observed in the pools, and one beyond the bound says "
    "misbehaviour varies within the bins."
)


def _pools(store: Store, runs: pl.DataFrame) -> tuple[pl.DataFrame | None, list[str]]:
    """Every score-based pool's candidates with behaviour and method columns, and the
    methods whose pools carry no selection score."""
    behaviour = dict(zip(runs["organism_id"], runs["behaviour"], strict=True))
    frames, unscored = [], set()
    columns = ["prompt_id", "candidate", "score", "misbehaving", "chosen", "selection"]
    for pool_id in store.finished_ids("pools"):
        manifest = store.read_manifest("pools", pool_id)
        organism = manifest["config"]["organism"]
        if organism not in behaviour:
            continue
        pool = store.read_parquet("pools", pool_id, columns=columns)
        if pool["score"].null_count() == pool.height:
            unscored.add(manifest["method"])
            continue
        frames.append(pool.with_columns(pl.lit(behaviour[organism]).alias("behaviour"),
                                        pl.lit(manifest["method"]).alias("method")))  # fmt: skip
    return (pl.concat(frames) if frames else None), sorted(unscored)


def both_fell(runs: pl.DataFrame) -> pl.Expr:
    """Runs whose behaviour went down while capability fell beyond its interval: a
    suppression that may come from damage rather than from the method.

    >>> runs = pl.DataFrame({"delta": [-0.5, -0.5, 0.1], "capability_fell": [True, False, True]})
    >>> runs.filter(both_fell(runs)).height
    1
    """
    if "capability_fell" not in runs.columns:
        return pl.lit(False)
    return (pl.col("delta") < 0) & pl.col("capability_fell")


def _design_notes(runs: pl.DataFrame) -> dict[str, str]:
    """Runs the design table flags: deltas on fewer than half the eval prompts, arms
    whose training set was empty (delta 0, kept in every table), and runs whose
    behaviour and capability both fell."""
    notes = {}
    runs = runs.with_columns(both_fell=both_fell(runs))
    for column, what in (
        ("few_judged", "rest on fewer than half of the eval prompts (n_judged < n_eval / 2)"),
        ("empty_training_set", "had no training rows, so the organism is its own result "
                               "(delta 0, kept)"),
        ("both_fell", "lowered the behaviour while capability fell below the organism's "
                      "(the run's 95% interval wholly under it): suppression or damage?"),
    ):  # fmt: skip
        if column not in runs.columns:
            continue
        flagged = runs.filter(pl.col(column).fill_null(False))
        if flagged.height:
            cells = flagged.select(pl.format("{}/{}/{}", "organism_id", "method", "arm"))
            shown = ", ".join(cells.to_series().unique(maintain_order=True).head(6))
            notes[column] = f"{flagged.height} design-table row(s) {what}: {shown}" + (
                ", ..." if flagged.height > 6 else "")  # fmt: skip
    return notes


def attribution_tables(
    store: Store, *, n_boot: int = 2000, seed: int = 0, min_organisms: int = MIN_ORGANISMS
) -> tuple[dict[str, pl.DataFrame], dict[str, str]]:
    """Every analysis that the store's design table supports, and notes: why an analysis
    or a pair is left out, or what it warned about (name -> note)."""
    if not store.table_path(RUNS_TABLE).is_file():
        raise StoreError(f"{store.root}: no tables/runs.parquet; run the study's methods first")
    runs = store.read_table(RUNS_TABLE)
    tables: dict[str, pl.DataFrame] = {}
    notes: dict[str, str] = _design_notes(runs)

    def attempt(name: str, compute: Callable[[], pl.DataFrame]) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            try:
                tables[name] = compute()
            except ShiftlabError as error:
                notes[name] = f"not computed: {error}"
        said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        if said and name not in notes:
            notes[name] = "; ".join(said)

    if store.table_path(ORGANISM_TABLE).is_file():
        tables["organisms"] = store.read_table(ORGANISM_TABLE)
        if "original" in runs["arm"] and "references" in tables["organisms"].columns:
            said = tables["organisms"].select("behaviour", "references").drop_nulls().unique(
                maintain_order=True)  # fmt: skip
            notes["original"] = "the original arm trained on the suites' references: " + "; ".join(
                f"{b}: {r}" for b, r in said.iter_rows())  # fmt: skip
    else:
        notes["organisms"] = "not shown: the store has no tables/organisms.parquet"
    attempt("decomposition", lambda: decompose(runs, seed=seed))
    if "decomposition" in tables:
        attempt("verdicts", lambda: attribute(tables["decomposition"],
                                              min_organisms=min_organisms))  # fmt: skip
    if "capability_delta" in runs.columns:
        attempt("capability_decomposition",
                lambda: decompose(runs, seed=seed, outcome="capability_delta"))  # fmt: skip
    else:
        notes["capability_decomposition"] = (
            "not computed: the design table has no capability_delta (written before "
            "evaluations scored capability; rerun the study into a new store)"
        )
    attempt("sign_tests", lambda: sign_tests(runs))
    attempt("method_table", lambda: method_table(runs))
    attempt("k_scaling", lambda: k_scaling(runs))
    if MEDIATOR in runs.columns and runs[MEDIATOR].drop_nulls().len():
        attempt("mediation", lambda: mediation(runs, MEDIATOR, n_boot=n_boot, seed=seed,
                                               min_organisms=min_organisms))  # fmt: skip
    else:
        notes["mediation"] = f"not computed: the design table has no {MEDIATOR} values"

    # Each run counts once per arm.
    distinct = (
        headline_runs(runs)
        .filter(~pl.col("method").is_in(WITHOUT_SFT_ARMS))
        .drop_nulls(["run_id", "delta"])
        .unique(["run_id", "arm"], keep="first", maintain_order=True)
    )

    def per_behaviour(fit: Any) -> pl.DataFrame:
        """Arm effects against ``original`` for each behaviour, by ``fit``; differences
        of rates, so their intervals are kept inside [-1, 1]."""
        parts = []
        for (behaviour,), part in distinct.group_by("behaviour", maintain_order=True):
            table = fit(part, "delta ~ C(arm, Treatment('original'))")
            parts.append(table.with_columns(pl.lit(str(behaviour)).alias("behaviour")))
        if not parts:
            raise ShiftlabError("no run of an SFT arm has a delta (nothing could be judged)")
        return within(pl.concat(parts))

    attempt("arm_effects", lambda: per_behaviour(fit_fixed_effects))
    attempt("arm_effects_mixed", lambda: per_behaviour(fit_mixed))
    pools, unscored = _pools(store, runs)
    if unscored:
        notes["eta (unscored pools)"] = (
            f"left out {', '.join(unscored)}: its pools carry no selection score "
            "(one candidate per prompt, nothing selected), so there is no η(s) to draw"
        )
    if pools is None:
        notes["eta"] = "not computed: no pool carries selection scores"
    else:
        attempt("eta", lambda: eta_curve(pools))
    return tables, notes


def _figures(
    runs: pl.DataFrame, tables: dict[str, pl.DataFrame], folder: Path
) -> tuple[dict[str, Path], dict[str, str]]:
    """Draw every figure the tables support, PNG and SVG under ``folder``; and why any
    other was not drawn (a table whose estimates are all null has nothing to plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shiftlab.plots import (
        DecompositionDisplay,
        DeltaHeatmapDisplay,
        EtaDisplay,
        ForestDisplay,
        KScalingDisplay,
        ShiftDeltaDisplay,
    )

    drawings: dict[str, Any] = {"delta_heatmap": lambda: DeltaHeatmapDisplay.from_frame(runs)}
    if "decomposition" in tables:
        pooled = tables["decomposition"].filter(pl.col("method").is_null())
        drawings["decomposition"] = lambda: DecompositionDisplay.from_frame(pooled)
        drawings["forest"] = lambda: ForestDisplay.from_frame(
            pooled, xlabel="Δ behaviour rate (difference of rates, 95% CI)"
        )
    if "sign_tests" in tables:
        drawings["sign_tests"] = lambda: ForestDisplay.from_frame(
            tables["sign_tests"], reference=0.5,
            xlabel="share of moved organisms that went down (95% CI)")  # fmt: skip
    if "mediation" in tables:
        drawings["shift_vs_delta"] = lambda: ShiftDeltaDisplay.from_frame(runs, MEDIATOR)
    if "eta" in tables:
        drawings["eta"] = lambda: EtaDisplay.from_frame(tables["eta"])
    if "k_scaling" in tables and _several_k(tables["k_scaling"]):
        drawings["k_scaling"] = lambda: KScalingDisplay.from_frame(tables["k_scaling"])
    paths, skipped = {}, {}
    for name, make in drawings.items():
        try:
            display = make().plot()
        except ShiftlabError as error:
            skipped[f"figure {name}"] = f"not drawn: {error}"
            continue
        for suffix in ("png", "svg"):
            path = folder / f"{name}.{suffix}"
            atomic_write(path, functools.partial(_save_figure, display.figure_, suffix))
            # The layout the first drawing found holds for the second, which would
            # otherwise measure every label again (a third of a figure's drawing).
            display.figure_.set_layout_engine("none")
        paths[name] = folder / f"{name}.png"
        plt.close(display.figure_)
    return paths, skipped


def _several_k(table: pl.DataFrame) -> bool:
    """Whether some behaviour x method ran at more than one candidate count."""
    counts = table.group_by("behaviour", "method").agg(pl.col("k").n_unique())
    return bool((counts["k"] > 1).any())


def _save_figure(figure: Any, suffix: str, path: Path) -> None:
    figure.savefig(path, dpi=150, format=suffix)


def format_p(p: float) -> str:
    """A p-value as text, never as 0: below float resolution it is a bound.

    >>> format_p(0.031), format_p(2.4e-7), format_p(0.0)
    ('0.031', '2.4e-07', '< 1e-16')
    """
    return "< 1e-16" if p < 1e-16 else f"{p:.2g}"


def _signed(value: float) -> str:
    return f"{round(value, 2) + 0.0:+.2f}"  # + 0.0: no "-0.00"


def _interval(estimate: float, low: float, high: float) -> str:
    return f"{_signed(estimate)} [{_signed(low)}, {_signed(high)}]"


def _share(part: float, total: float) -> str:
    # A total within rounding of 0 has no shares to speak of.
    return f"{part / total:.0%} of the change" if abs(total) > 1e-12 else "no change to share"


def _split(row: dict[str, Any], methods: list[str]) -> str:
    """The decomposition clause of a headline: the total, both parts with their share,
    and the verdict or why there is none."""
    total = row["total"]
    parts = [
        f"{name} {_interval(row[t], row[f'{t}_ci_low'], row[f'{t}_ci_high'])} "
        f"({_share(row[t], total)})"
        for t, name in (("selection", "selection"), ("label_shift", "label shift"))
    ]
    said = (f"consistency training ({', '.join(methods)}; G = {row['n_organisms']} "
            f"organisms): of the {_interval(total, row['total_ci_low'], row['total_ci_high'])} "
            f"change, {parts[0]}, {parts[1]}")  # fmt: skip
    attributed = row["attributed_to"]
    if attributed is None:
        return f"{said}; no attribution: {row['reason']}"
    part = {"selection": "selection", "label_shift": "label shift",
            "both": "both selection and label shift"}[attributed]  # fmt: skip
    return f"{said}; the change is attributable to {part} ({row['reason']})"


def _signs(row: dict[str, Any]) -> str:
    moved = row["n"]
    counts = (f"the behaviour went down in {row['n_down']}, stayed in {row['n_unmoved']} and "
              f"went up in {row['n_up']} of {row['n_clusters']} organisms")  # fmt: skip
    if not moved:
        return f"{counts}; none moved, so there is no sign test"
    return (f"{counts} (exact sign test over the {moved} that moved: p = "
            f"{format_p(row['p_value'])}; the smallest p {moved} organisms allow is "
            f"{format_p(row['p_min'])})")  # fmt: skip


def headlines(tables: dict[str, pl.DataFrame]) -> dict[str, str]:
    """One sentence per behaviour from the pooled decomposition, its verdict, whether a
    suppression came with a capability loss, and the organisms' sign test."""
    sentences: dict[str, list[str]] = {}
    parts = tables.get("decomposition")
    verdicts = tables.get("verdicts")
    if parts is not None and verdicts is not None:
        pooled_methods = parts.filter(
            pl.col("role") == "consistency_training",
            pl.col("has_selection"),
            pl.col("method").is_not_null(),
        )
        for behaviour in parts["behaviour"].unique(maintain_order=True).to_list():
            pooled = verdicts.filter(pl.col("method").is_null(), behaviour=behaviour)
            methods = pooled_methods.filter(behaviour=behaviour)["method"].unique().sort()
            sentences[behaviour] = [
                _split(pooled.row(0, named=True), methods.to_list()) if pooled.height
                else "no consistency-training method with a selection step to split"
            ]  # fmt: skip
            capability = _capability_clause(tables, behaviour)
            if capability is not None:
                sentences[behaviour].append(capability)
    signs = tables.get("sign_tests")
    if signs is not None:
        for row in signs.filter(analysis="sign_test").iter_rows(named=True):
            sentences.setdefault(row["behaviour"], []).append(_signs(row))
    return {b: "; ".join(s) + "." for b, s in sentences.items()}


def _capability_beside_behaviour(tables: dict[str, pl.DataFrame]) -> pl.DataFrame | None:
    """Each decomposition term's behaviour change beside its capability change, per
    behaviour x method (method null: pooled), both paired within organism."""
    behaviour, capability = tables.get("decomposition"), tables.get("capability_decomposition")
    if behaviour is None or capability is None:
        return None
    keys = ["behaviour", "method", "term"]

    def side(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        return frame.select(*keys, pl.col("estimate").alias(name),
                            pl.col("ci_low").alias(f"{name}_ci_low"),
                            pl.col("ci_high").alias(f"{name}_ci_high"),
                            pl.col("n_clusters").alias(f"{name}_organisms"))  # fmt: skip

    return side(behaviour, "behaviour_change").join(
        side(capability, "capability_change"), on=keys, how="left", nulls_equal=True
    )


def _capability_clause(tables: dict[str, pl.DataFrame], behaviour: str) -> str | None:
    """What the headline says of capability when the pooled total lowered the behaviour
    and capability fell with it."""
    beside = _capability_beside_behaviour(tables)
    if beside is None:
        return None
    total = beside.filter(pl.col("method").is_null(), term="total", behaviour=behaviour)
    if not total.height:
        return None
    row = total.row(0, named=True)
    change, low, high = (row[f"capability_change{s}"] for s in ("", "_ci_low", "_ci_high"))
    if change is None or row["behaviour_change"] >= 0 or change >= 0:
        return None
    clear = "its interval excludes 0" if high < 0 else "its interval includes 0"
    return (f"the suppression came with a capability change of {_interval(change, low, high)} "
            f"({clear}): check that the method did not lower the behaviour by damaging "
            "the model")  # fmt: skip


def _eta_beside_observed(tables: dict[str, pl.DataFrame]) -> pl.DataFrame | None:
    """The η bound beside the selection effect observed on the training labels, per
    behaviour x method."""
    eta = tables.get("eta")
    if eta is None:
        return None
    return (
        eta.filter(pl.col("term").is_in(["label_selection", "selection_bound"]))
        .pivot(on="term", index=["behaviour", "method"], values="estimate")
        .sort("behaviour", "method")
    )


P_COLUMNS = ("p_value", "p_adjusted", "p_min")


def _cell(column: str, value: Any) -> str:
    """A table cell: p-values with significant digits (never 0), other numbers to 4
    decimals unless that would round a nonzero value to 0."""
    if value is None:
        return ""
    if isinstance(value, float):
        if column in P_COLUMNS or column.endswith("_p_value"):
            return format_p(value)
        return f"{value:.2g}" if value and abs(value) < 5e-5 else f"{round(value, 4):g}"
    return str(value)


def _table_html(frame: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(c, v))}</td>"
                         for c, v in zip(frame.columns, row, strict=True)) + "</tr>"
        for row in frame.iter_rows()
    )  # fmt: skip
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _table_md(frame: pl.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_cell(c, v) for c, v in zip(frame.columns, row, strict=True))
              + " |" for row in frame.iter_rows()]  # fmt: skip
    return "\n".join(lines)


STYLE = """body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;color:#222}
table{border-collapse:collapse;font-size:.8rem;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ccc;padding:.2rem .4rem;text-align:right}th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee}code{background:#f3f3f3}"""


def write_report(
    store: Store,
    *,
    out: str | Path | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    min_organisms: int = MIN_ORGANISMS,
) -> Path:
    """Run every attribution analysis on ``store``'s design table and write the report
    into ``out`` (default: the store's own folder); return the path of ``report.html``.
    ``n_boot`` bootstrap draws for mediation; ``min_organisms`` for a verdict. A report
    whose inputs (tables, pools, manifest, parameters, code) are those its record holds,
    with its files whole, is kept as it is."""
    folder = Path(out) if out is not None else store.root
    parameters = {"n_boot": n_boot, "seed": seed, "min_organisms": min_organisms}
    key = _finished.report_key(store, parameters)
    if _finished.report_is_current(folder, key):
        return folder / REPORT_PAGE
    tables, notes = attribution_tables(store, n_boot=n_boot, seed=seed,
                                       min_organisms=min_organisms)  # fmt: skip
    with naming_full_disk(folder):
        (folder / "attribution").mkdir(parents=True, exist_ok=True)
        (folder / "figures").mkdir(exist_ok=True)
    # One report is written into a folder at a time, so what is left there now was left
    # by a killed one.
    with Lease(folder / REPORT_LEASE):
        for leftover in (folder / "attribution", folder / "figures"):
            sweep_temporaries(leftover)
        for page in (REPORT_PAGE, REPORT_MARKDOWN, _finished.REPORT_RECORD):
            for stale in temporaries_of(folder / page):
                stale.unlink(missing_ok=True)
        _finished.forget(folder / _finished.REPORT_RECORD)
        written = _write_report(store, folder, tables, notes, min_organisms)
        _finished.record_report(folder, key, written)
        return folder / REPORT_PAGE


def _write_report(
    store: Store,
    folder: Path,
    tables: dict[str, pl.DataFrame],
    notes: dict[str, str],
    min_organisms: int,
) -> list[Path]:
    """Write the analyses' ``tables``, their figures and the page into ``folder``; the
    files written."""
    beside = _eta_beside_observed(tables)
    if beside is not None:
        tables["eta_bound_beside_observed"] = beside
    capability = _capability_beside_behaviour(tables)
    if capability is not None:
        tables["capability_beside_behaviour"] = capability
    runs = store.read_table(RUNS_TABLE)
    fell = runs.filter(both_fell(runs).fill_null(False))
    if fell.height:
        tables["runs_where_both_fell"] = fell.select(
            "organism_id", "method", "arm", "k", "seed", "delta", "capability_before",
            "capability_after", "capability_delta",
        )  # fmt: skip
    for name, frame in tables.items():
        if name != "organisms":  # a study table, shown, not an analysis
            atomic_write(folder / "attribution" / f"{name}.parquet", frame.write_parquet)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # matplotlib's layout notes
        figures, skipped = _figures(runs, tables, folder / "figures")
    notes.update(skipped)
    sentences = headlines(tables)
    explained = [SIGN_CONVENTION, CAPABILITY_NOTE, ESTIMANDS.format(min_organisms=min_organisms),
                 MOVED.format(threshold=0) + "."]  # fmt: skip
    organisms = tables.get("organisms")
    if organisms is not None and "rate_definition" in organisms.columns:
        for definition in organisms["rate_definition"].unique(maintain_order=True):
            kind, _, k = definition.partition(" x")
            explained.append(RATE_NOTE[kind].format(definition=k))
    summary = _finished.manifest_summary(store)
    title = f"shiftlab report: {store.root.name}"

    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
            "<h2>Headline findings</h2>"]  # fmt: skip
    page += [f"<p>{html.escape(line)}</p>" for line in explained] + ["<ul>"]
    page += [f"<li><b>{html.escape(b)}</b>: {html.escape(s)}</li>" for b, s in sentences.items()]
    page.append("</ul><h2>Figures</h2>")
    markdown = [f"# {title}", "", "## Headline findings", ""]
    markdown += [line for said in explained for line in (said, "")]
    markdown += [f"- **{b}**: {s}" for b, s in sentences.items()]
    markdown += ["", "## Figures", ""]
    for name, path in figures.items():
        data = base64.b64encode(path.read_bytes()).decode()
        page.append(f"<h3>{name.replace('_', ' ')}</h3><img alt='{name}' "
                    f"src='data:image/png;base64,{data}'>")  # fmt: skip
        markdown.append(f"![{name}](figures/{path.name})")
    page.append("<h2>Tables</h2>")
    markdown += ["", "## Tables", ""]
    for name, frame in tables.items():
        said = f"<p>{html.escape(ETA_NOTE)}</p>" if name == "eta_bound_beside_observed" else ""
        page.append(f"<h3>{name.replace('_', ' ')}</h3>{said}{_table_html(frame)}")
        markdown += [f"### {name.replace('_', ' ')}", ""]
        markdown += [ETA_NOTE, ""] if said else []
        markdown += [_table_md(frame), ""]
    if notes:
        page.append("<h2>Notes</h2><ul>")
        page += [f"<li>{html.escape(n)}: {html.escape(r)}</li>" for n, r in notes.items()]
        page.append("</ul>")
        markdown += ["## Notes", ""] + [f"- {n}: {r}" for n, r in notes.items()] + [""]
    page.append("<h2>Manifest</h2><ul>")
    page += [f"<li>{html.escape(k)}: <code>{html.escape(json.dumps(v))}</code></li>"
             for k, v in summary.items()]  # fmt: skip
    page.append("</ul></body></html>")
    markdown += ["## Manifest", ""] + [f"- {k}: `{json.dumps(v)}`" for k, v in summary.items()]
    atomic_write_bytes(folder / REPORT_MARKDOWN, ("\n".join(markdown) + "\n").encode())
    atomic_write_bytes(folder / REPORT_PAGE, "\n".join(page).encode())
    written = [folder / "attribution" / f"{n}.parquet" for n in tables if n != "organisms"]
    written += [p.with_suffix(s) for p in figures.values() for s in (".png", ".svg")]
    return [*written, folder / REPORT_MARKDOWN, folder / REPORT_PAGE]
