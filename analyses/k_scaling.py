"""k-scaling curves: the mean change in behaviour rate of the full arm against the number
of candidates per prompt k, per behaviour x method, as means over organisms with sign-flip
95% CIs (k = 1 selects nothing: has_selection false).

    python analyses/k_scaling.py runs/demo out/

Writes k_scaling.parquet/.csv and k_scaling.png into ``out/``.
"""

from __future__ import annotations

from pathlib import Path

from _common import arguments, design_table, outputs, run, save_figure, shown, write_table

from shiftlab.attribution import k_scaling
from shiftlab.plots import KScalingDisplay


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    _, runs = design_table(args.store)
    table = k_scaling(runs)
    out = Path(args.out)
    with outputs(out) as staging:
        write_table(table, staging, "k_scaling")
        save_figure(KScalingDisplay.from_frame(table), staging, "k_scaling")
    print("mean delta by candidates per prompt k (full arm):")
    for (behaviour, method), part in table.group_by("behaviour", "method", maintain_order=True):
        points = part.select("k", "mean_delta").rows()
        curve = ", ".join(f"k={k}: {shown(d, '+.3f')}" for k, d in points)
        print(f"  {behaviour} · {method}: {curve}")
    print(f"wrote {out}/k_scaling.parquet, .csv and .png")


if __name__ == "__main__":
    run(main)
