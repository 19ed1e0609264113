"""Moderators: the mean change in behaviour rate by base-model facts (instruct or base
model, log10 parameter count), per behaviour, and each moderator's slope where it varies.

    python analyses/moderators.py runs/demo out/ [--moderators facts.csv]

``--moderators`` adds or replaces moderators: a CSV with a ``base_model`` column and one
column per moderator. Without it, ``instruct`` is read from each base model's name and
``log10_params`` counted on the loaded model. Writes moderators.parquet/.csv,
base_models.csv and moderators.png into ``out/``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from _common import arguments, design_table, outputs, run, save_figure, shown, write_table

from shiftlab.attribution import moderator_table
from shiftlab.errors import ShiftlabError
from shiftlab.plots import ForestDisplay
from shiftlab.spec import load_spec
from shiftlab.study import base_model_facts


def _options(parser) -> None:
    parser.add_argument("--moderators", help="CSV: base_model plus one column per moderator")


def _facts(store, path: str | None) -> pl.DataFrame:
    given = None
    if path is not None:
        try:
            given = pl.read_csv(path)
        except (OSError, pl.exceptions.PolarsError) as error:
            raise ShiftlabError(f"{path}: cannot read the moderators CSV ({error})") from None
        if "base_model" not in given.columns:
            raise ShiftlabError(f"{path}: expected a base_model column, found {given.columns}")
        if {"instruct", "log10_params"} <= set(given.columns):
            return given  # nothing left to read from the models
    facts = base_model_facts(load_spec(store.root / "study.yaml")).select(
        "base_model", "instruct", "log10_params"
    )
    if given is None:
        return facts
    kept = facts.drop([c for c in given.columns if c != "base_model"], strict=False)
    return kept.join(given, on="base_model", how="left")


def main() -> None:
    args = arguments(__doc__.splitlines()[0], _options, arm=True)
    store, runs = design_table(args.store)
    facts = _facts(store, args.moderators)
    table = moderator_table(runs, facts, arm=args.arm)
    out = Path(args.out)
    with outputs(out) as staging:
        write_table(facts, staging, "base_models")
        write_table(table, staging, "moderators")
        save_figure(ForestDisplay.from_frame(table), staging, "moderators")
    print(f"base models: {facts.height}; mean delta by moderator ({args.arm} arm):")
    for row in table.iter_rows(named=True):
        print(
            f"  {row['behaviour']} · {row['term']}: {shown(row['estimate'], '+.3f')} "
            f"[{shown(row['ci_low'], '+.3f')}, {shown(row['ci_high'], '+.3f')}], N={row['n']}"
        )
    if table.filter(analysis="moderator_slope").is_empty():
        print("  no moderator varies between the base models: no slopes")
    print(f"wrote {out}/moderators.parquet, .csv, base_models.csv and moderators.png")


if __name__ == "__main__":
    run(main)
