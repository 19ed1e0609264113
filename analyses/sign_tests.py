"""Sign tests per behaviour over organisms: how many organisms consistency training moved
down, left unmoved and moved up, the share of moved organisms that went down and the
exact binomial p (Holm-adjusted across behaviours), pooled and per method (controls and
paired-loss methods in rows of their own).

    python analyses/sign_tests.py runs/demo out/ [--arm full]

Writes sign_tests.parquet/.csv and sign_tests.png into ``out/``.
"""

from __future__ import annotations

from pathlib import Path

from _common import arguments, design_table, outputs, run, save_figure, shown, write_table

from shiftlab.attribution import MOVED, sign_tests
from shiftlab.plots import ForestDisplay


def main() -> None:
    args = arguments(__doc__.splitlines()[0], arm=True)
    _, runs = design_table(args.store)
    table = sign_tests(runs, arm=args.arm)
    out = Path(args.out)
    with outputs(out) as staging:
        write_table(table, staging, "sign_tests")
        display = ForestDisplay.from_frame(
            table.filter(analysis="sign_test"), reference=0.5,
            xlabel="share of moved organisms that went down (95% CI)",
        )  # fmt: skip
        save_figure(display, staging, "sign_tests")
    print(f"sign tests, {args.arm} arm, consistency training pooled; {MOVED.format(threshold=0)}:")
    for row in table.filter(analysis="sign_test").iter_rows(named=True):
        print(
            f"  {row['behaviour']}: {row['n_down']} down, {row['n_unmoved']} unmoved, "
            f"{row['n_up']} up of {row['n_clusters']} organisms; "
            f"{shown(row['estimate'], '.0%')} of N={row['n']} moved suppressed, "
            f"p={shown(row['p_value'])} (Holm {shown(row['p_adjusted'])}; smallest possible "
            f"{shown(row['p_min'])})"
        )
    print(f"wrote {out}/sign_tests.parquet, .csv and .png")


if __name__ == "__main__":
    run(main)
