"""The per-method table: for each behaviour x method, the mean change in behaviour rate
over organisms (sign-flip 95% CI) and sign consistency (the share of moved organisms in
which the behaviour went down, with its exact CI and sign-test p).

    python analyses/method_table.py runs/demo out/ [--arm full]

Writes method_table.parquet/.csv (tidy), method_table_wide.parquet/.csv (one row per
behaviour x method) and method_table.png into ``out/``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from _common import arguments, design_table, outputs, run, save_figure, write_table

from shiftlab.attribution import method_table
from shiftlab.plots import ForestDisplay


def main() -> None:
    args = arguments(__doc__.splitlines()[0], arm=True)
    _, runs = design_table(args.store)
    table = method_table(runs, arm=args.arm)
    out = Path(args.out)
    wide = (
        table.select(
            "behaviour",
            "method",
            "role",
            "term",
            "estimate",
            "ci_low",
            "ci_high",
            "n",
            "n_clusters",
            "note",
        )
        .pivot(
            on="term",
            index=["behaviour", "method", "role", "note"],
            values=["estimate", "ci_low", "ci_high", "n", "n_clusters"],
        )
        .select(
            "behaviour",
            "method",
            "role",
            "note",
            pl.col("estimate_mean_delta").alias("mean_delta"),
            pl.col("ci_low_mean_delta").alias("mean_delta_ci_low"),
            pl.col("ci_high_mean_delta").alias("mean_delta_ci_high"),
            pl.col("n_mean_delta").alias("n_runs"),
            pl.col("n_clusters_mean_delta").alias("n_organisms"),
            pl.col("estimate_share_down").alias("share_down"),
            pl.col("ci_low_share_down").alias("share_down_ci_low"),
            pl.col("ci_high_share_down").alias("share_down_ci_high"),
            pl.col("n_share_down").alias("n_moved_organisms"),
        )
    )
    with outputs(out) as staging:
        write_table(table, staging, "method_table")
        write_table(wide, staging, "method_table_wide")
        display = ForestDisplay.from_frame(
            table.filter(term="mean_delta"),
            xlabel="mean Δ behaviour rate (difference of rates, 95% CI)",
        )
        save_figure(display, staging, "method_table")
    print(f"mean delta and sign consistency by behaviour x method ({args.arm} arm):")
    with pl.Config(tbl_rows=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(wide.select("behaviour", "method", "role", "mean_delta", "n_organisms",
                          "share_down", "n_moved_organisms")
              .with_columns(pl.selectors.float().round(3)))  # fmt: skip
    for row in wide.filter(pl.col("note").is_not_null()).iter_rows(named=True):
        print(f"note: {row['behaviour']} · {row['method']}: {row['note']}")
    print(f"wrote {out}/method_table{{,_wide}}.parquet, .csv and method_table.png")


if __name__ == "__main__":
    run(main)
