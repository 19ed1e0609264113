"""Selection vs distribution shift: per behaviour, the effect of which examples a method
selects (full minus shuffled) and of its labels' shift (relabelled minus original), paired
within organism, with cluster-bootstrap 95% CIs.

    python analyses/decomposition.py runs/demo out/ [--n-boot 2000] [--seed 0]

Writes decomposition.parquet/.csv and decomposition.png into ``out/``.
"""

from __future__ import annotations

from pathlib import Path

from _common import arguments, design_table, outputs, run, save_figure, shown, write_table

from shiftlab.attribution import decompose
from shiftlab.plots import DecompositionDisplay


def _options(parser) -> None:
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap draws (2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")


def main() -> None:
    args = arguments(__doc__.splitlines()[0], _options)
    _, runs = design_table(args.store)
    table = decompose(runs, n_boot=args.n_boot, seed=args.seed)
    out = Path(args.out)
    with outputs(out) as staging:
        write_table(table, staging, "decomposition")
        save_figure(DecompositionDisplay.from_frame(table), staging, "decomposition")
    print("selection vs labelling shift (all methods pooled; 95% cluster-bootstrap CI):")
    for row in table.filter(table["method"].is_null()).iter_rows(named=True):
        print(
            f"  {row['behaviour']} · {row['term']}: {shown(row['estimate'], '+.3f')} "
            f"[{shown(row['ci_low'], '+.3f')}, {shown(row['ci_high'], '+.3f')}], "
            f"{row['n_clusters']} organisms"
        )
    print(f"wrote {out}/decomposition.parquet, .csv and .png")


if __name__ == "__main__":
    run(main)
