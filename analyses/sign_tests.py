"""Sign tests per behaviour: the share of runs in which consistency training suppressed
the behaviour, N and the exact binomial p (Holm-adjusted across behaviours), overall and
per method.

    python analyses/sign_tests.py runs/demo out/ [--arm full]

Writes sign_tests.parquet/.csv and sign_tests.png into ``out/``.
"""

from __future__ import annotations

from pathlib import Path

from _common import arguments, design_table, outputs, run, save_figure, shown, write_table

from shiftlab.attribution import sign_tests
from shiftlab.plots import ForestDisplay


def main() -> None:
    args = arguments(__doc__.splitlines()[0], arm=True)
    _, runs = design_table(args.store)
    table = sign_tests(runs, arm=args.arm)
    out = Path(args.out)
    with outputs(out) as staging:
        write_table(table, staging, "sign_tests")
        display = ForestDisplay.from_frame(table.filter(analysis="sign_test"))
        save_figure(display, staging, "sign_tests")
    print(f"sign tests, {args.arm} arm (share of moved runs in which the behaviour went down):")
    for row in table.filter(analysis="sign_test").iter_rows(named=True):
        print(
            f"  {row['behaviour']}: {shown(row['estimate'], '.0%')} of N={row['n']} runs "
            f"suppressed, p={shown(row['p_value'])} (Holm {shown(row['p_adjusted'])})"
        )
    print(f"wrote {out}/sign_tests.parquet, .csv and .png")


if __name__ == "__main__":
    run(main)
