"""The study report: every attribution analysis of a finished store, its figures, and one
page with the headline finding per behaviour.

``write_report(store)`` writes ``attribution/<analysis>.parquet``, ``figures/<name>.png``
and ``.svg``, ``report.html`` (self-contained: figures embedded) and ``report.md``.

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
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab._version import __version__
from shiftlab.attribution import (
    decompose,
    eta_curve,
    fit_fixed_effects,
    fit_mixed,
    headline_runs,
    mediation,
    sign_tests,
)
from shiftlab.errors import ShiftlabError, StoreError
from shiftlab.spec import PAIRED_METHODS
from shiftlab.store import MANIFEST, RUNS_TABLE, Store, atomic_write, atomic_write_bytes


def _pools(store: Store, runs: pl.DataFrame) -> pl.DataFrame | None:
    """Every score-based pool's candidates with behaviour and method columns."""
    behaviour = dict(zip(runs["organism_id"], runs["behaviour"], strict=True))
    frames = []
    for pool_id in store.finished_ids("pools"):
        manifest = store.read_manifest("pools", pool_id)
        organism = manifest["config"]["organism"]
        if organism not in behaviour:
            continue
        pool = pl.read_parquet(store.path("pools", pool_id), columns=["score", "misbehaving",
                                                                       "chosen"])  # fmt: skip
        if pool["score"].null_count() == pool.height:
            continue
        frames.append(pool.with_columns(pl.lit(behaviour[organism]).alias("behaviour"),
                                        pl.lit(manifest["method"]).alias("method")))  # fmt: skip
    return pl.concat(frames) if frames else None


def attribution_tables(
    store: Store, *, n_boot: int = 2000, seed: int = 0
) -> tuple[dict[str, pl.DataFrame], dict[str, str]]:
    """Every analysis that the store's design table supports, and notes: why an analysis
    is missing, or what it warned about (analysis -> note)."""
    if not store.table_path(RUNS_TABLE).is_file():
        raise StoreError(f"{store.root}: no tables/runs.parquet; run the study's methods first")
    runs = store.read_table(RUNS_TABLE)
    tables: dict[str, pl.DataFrame] = {}
    skipped: dict[str, str] = {}

    def attempt(name: str, compute: Any) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            try:
                tables[name] = compute()
            except ShiftlabError as error:
                skipped[name] = f"not computed: {error}"
        said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        if said and name not in skipped:
            skipped[name] = "; ".join(said)

    attempt("sign_tests", lambda: sign_tests(runs))
    attempt("decomposition", lambda: decompose(runs, n_boot=n_boot, seed=seed))
    if "shift_kl" in runs.columns and runs["shift_kl"].drop_nulls().len():
        attempt("mediation", lambda: mediation(runs, "shift_kl", n_boot=n_boot, seed=seed))
    else:
        skipped["mediation"] = "not computed: the design table has no shift_kl values"

    # Arm effects compare SFT arms: paired losses have no such arms, and greedy self-
    # training's arms are the relabeled run itself. Each run counts once per arm.
    distinct = (
        headline_runs(runs)
        .filter(~pl.col("method").is_in([*PAIRED_METHODS, "greedy_self_training"]))
        .drop_nulls("run_id")
        .unique(["run_id", "arm"], keep="first", maintain_order=True)
    )

    def per_behaviour(fit: Any) -> pl.DataFrame:
        """Arm effects against ``original`` for each behaviour, by ``fit``."""
        parts = []
        for (behaviour,), part in distinct.group_by("behaviour", maintain_order=True):
            table = fit(part, "delta ~ C(arm, Treatment('original'))")
            parts.append(table.with_columns(pl.lit(str(behaviour)).alias("behaviour")))
        return pl.concat(parts)

    attempt("arm_effects", lambda: per_behaviour(fit_fixed_effects))
    attempt("arm_effects_mixed", lambda: per_behaviour(fit_mixed))
    pools = _pools(store, runs)
    if pools is None:
        skipped["eta"] = "not computed: no pool carries selection scores"
    else:
        attempt("eta", lambda: eta_curve(pools))
    return tables, skipped


def _figures(store: Store, tables: dict[str, pl.DataFrame]) -> dict[str, Path]:
    """Draw every figure the tables support; PNG and SVG under ``figures/``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shiftlab.plots import (
        DecompositionDisplay,
        DeltaHeatmapDisplay,
        EtaDisplay,
        ForestDisplay,
        ShiftDeltaDisplay,
    )

    runs = store.read_table(RUNS_TABLE)
    drawings: dict[str, Any] = {"delta_heatmap": lambda: DeltaHeatmapDisplay.from_frame(runs)}
    if "decomposition" in tables:
        drawings["decomposition"] = lambda: DecompositionDisplay.from_frame(tables["decomposition"])
        drawings["forest"] = lambda: ForestDisplay.from_frame(
            tables["decomposition"].filter(pl.col("method").is_null())
        )
    if "mediation" in tables:
        drawings["shift_vs_delta"] = lambda: ShiftDeltaDisplay.from_frame(runs, "shift_kl")
    if "eta" in tables:
        drawings["eta"] = lambda: EtaDisplay.from_frame(tables["eta"])
    paths = {}
    for name, make in drawings.items():
        display = make().plot()
        for suffix in ("png", "svg"):
            path = store.root / "figures" / f"{name}.{suffix}"
            atomic_write(path, functools.partial(_save_figure, display.figure_, suffix))
        paths[name] = store.root / "figures" / f"{name}.png"
        plt.close(display.figure_)
    return paths


def _save_figure(figure: Any, suffix: str, path: Path) -> None:
    figure.savefig(path, dpi=150, format=suffix)


def _interval(row: dict[str, Any]) -> str:
    return f"{row['estimate']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"


def headlines(tables: dict[str, pl.DataFrame]) -> dict[str, str]:
    """One sentence per behaviour, generated from the sign test and the decomposition."""
    sentences: dict[str, list[str]] = {}
    signs = tables.get("sign_tests")
    if signs is not None:
        for row in signs.filter(analysis="sign_test").iter_rows(named=True):
            if row["estimate"] is None:
                continue
            sentences.setdefault(row["behaviour"], []).append(
                f"full consistency training lowered the behaviour rate in "
                f"{row['estimate']:.0%} of the runs that moved (N = {row['n']}, "
                f"exact sign test p = {row['p_value']:.2g})"
            )
    parts = tables.get("decomposition")
    if parts is not None:
        for (behaviour,), rows in parts.filter(pl.col("method").is_null()).group_by(
            "behaviour", maintain_order=True
        ):
            effect = {r["term"]: r for r in rows.iter_rows(named=True)}
            said = []
            for term, name in (("selection", "selection"), ("labelling_shift", "labelling shift")):
                if term in effect:
                    said.append(f"{name} {_interval(effect[term])}")
            sentences.setdefault(str(behaviour), []).append("; ".join(said))
            verdict = _verdict(effect)
            if verdict:
                sentences[str(behaviour)].append(verdict)
    return {b: "; ".join(s) + "." for b, s in sentences.items()}


def _verdict(effect: dict[str, dict[str, Any]]) -> str:
    def clear(term: str) -> bool:
        row = effect.get(term)
        return row is not None and (row["ci_low"] > 0 or row["ci_high"] < 0)

    selection, shift = clear("selection"), clear("labelling_shift")
    if selection and shift:
        larger = max(("selection", "labelling_shift"), key=lambda t: abs(effect[t]["estimate"]))
        return f"both effects are clear of zero; {larger.replace('_', ' ')} is the larger"
    if shift:
        return "the change is attributable to the labelling shift, not to selection"
    if selection:
        return "the change is attributable to selection, not to the labelling shift"
    return "neither effect is distinguishable from zero at this sample size"


def _manifest_summary(store: Store) -> dict[str, Any]:
    path = store.root / MANIFEST
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    return {
        "shiftlab (report)": __version__,
        "shiftlab (study)": manifest.get("shiftlab_version"),
        "git revision": (manifest.get("git") or {}).get("revision"),
        "study hash": manifest.get("study_hash"),
        "seeds": manifest.get("seeds"),
        "packages": manifest.get("packages"),
    }


def _table_html(frame: pl.DataFrame) -> str:
    shown = frame.with_columns(pl.col(pl.Float64).round(4))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in shown.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{'' if v is None else html.escape(str(v))}</td>" for v in row)
        + "</tr>"
        for row in shown.iter_rows()
    )  # fmt: skip
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _table_md(frame: pl.DataFrame) -> str:
    shown = frame.with_columns(pl.col(pl.Float64).round(4))
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |"
              for row in shown.iter_rows()]  # fmt: skip
    return "\n".join(lines)


STYLE = """body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;color:#222}
table{border-collapse:collapse;font-size:.8rem;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ccc;padding:.2rem .4rem;text-align:right}th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee}code{background:#f3f3f3}"""


def write_report(store: Store, *, n_boot: int = 2000, seed: int = 0) -> Path:
    """Run every attribution analysis on ``store``'s design table and write the report;
    return the path of ``report.html``."""
    tables, skipped = attribution_tables(store, n_boot=n_boot, seed=seed)
    folder = store.root / "attribution"
    folder.mkdir(exist_ok=True)
    for name, frame in tables.items():
        atomic_write(folder / f"{name}.parquet", frame.write_parquet)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # matplotlib's layout notes
        figures = _figures(store, tables)
    sentences = headlines(tables)
    summary = _manifest_summary(store)
    title = f"shiftlab report: {store.root.name}"

    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
            "<h2>Headline findings</h2><ul>"]  # fmt: skip
    page += [f"<li><b>{html.escape(b)}</b>: {html.escape(s)}</li>" for b, s in sentences.items()]
    page.append("</ul><h2>Figures</h2>")
    markdown = [f"# {title}", "", "## Headline findings", ""]
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
        page.append(f"<h3>{name.replace('_', ' ')}</h3>{_table_html(frame)}")
        markdown += [f"### {name.replace('_', ' ')}", "", _table_md(frame), ""]
    if skipped:
        page.append("<h2>Notes</h2><ul>")
        page += [f"<li>{html.escape(n)}: {html.escape(r)}</li>" for n, r in skipped.items()]
        page.append("</ul>")
        markdown += ["## Notes", ""] + [f"- {n}: {r}" for n, r in skipped.items()] + [""]
    page.append("<h2>Manifest</h2><ul>")
    page += [f"<li>{html.escape(k)}: <code>{html.escape(json.dumps(v))}</code></li>"
             for k, v in summary.items()]  # fmt: skip
    page.append("</ul></body></html>")
    markdown += ["## Manifest", ""] + [f"- {k}: `{json.dumps(v)}`" for k, v in summary.items()]
    atomic_write_bytes(store.root / "report.md", ("\n".join(markdown) + "\n").encode())
    target = store.root / "report.html"
    atomic_write_bytes(target, "\n".join(page).encode())
    return target
