"""Selection vs label shift: per behaviour, the change of the full arm (full minus none)
split exactly into selection (full minus shuffled) and label shift (shuffled minus none),
beside the comparators relabeling (relabeled minus none) and reference (original minus
none), each a mean over organisms with a sign-flip 95% interval, and the verdict: which
part the change is attributed to, or why none can be.

    python analyses/decomposition.py runs/demo out/ [--min-organisms 6] [--seed 0]

Writes decomposition.parquet/.csv, verdicts.parquet/.csv and decomposition.png into
``out/``.
"""

from __future__ import annotations

from pathlib import Path

from _common import arguments, design_table, outputs, run, save_figure, shown, write_table

from shiftlab.attribution import MIN_ORGANISMS, attribute, decompose
from shiftlab.plots import DecompositionDisplay


def _options(parser) -> None:
    parser.add_argument("--min-organisms", type=int, default=MIN_ORGANISMS,
                        help=f"organisms a verdict needs ({MIN_ORGANISMS})")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="Monte Carlo sign-flip seed (0)")


def main() -> None:
    args = arguments(__doc__.splitlines()[0], _options)
    _, runs = design_table(args.store)
    table = decompose(runs, seed=args.seed)
    verdicts = attribute(table, min_organisms=args.min_organisms)
    out = Path(args.out)
    with outputs(out) as staging:
        write_table(table, staging, "decomposition")
        write_table(verdicts, staging, "verdicts")
        save_figure(DecompositionDisplay.from_frame(table), staging, "decomposition")
    print("total = selection + label shift, and the comparators (consistency training "
          "pooled; 95% sign-flip intervals over organisms):")  # fmt: skip
    for row in table.filter(table["method"].is_null()).iter_rows(named=True):
        print(
            f"  {row['behaviour']} · {row['term']}: {shown(row['estimate'], '+.3f')} "
            f"[{shown(row['ci_low'], '+.3f')}, {shown(row['ci_high'], '+.3f')}], "
            f"p={shown(row['p_value'])} (smallest possible {shown(row['p_min'])}), "
            f"{row['n_clusters']} organisms"
        )
    for row in verdicts.filter(verdicts["method"].is_null()).iter_rows(named=True):
        verdict = row["attributed_to"] or "no attribution"
        print(f"  {row['behaviour']}: {verdict} ({row['reason']})")
    print(f"wrote {out}/decomposition and verdicts (.parquet, .csv) and decomposition.png")


if __name__ == "__main__":
    run(main)
