"""Display classes draw from tidy frames and save PNG and SVG."""

import matplotlib
import matplotlib.pyplot as plt
import polars as pl
import pytest

from shiftlab.attribution import decompose, eta_curve, simulate_runs
from shiftlab.errors import ShiftlabError
from shiftlab.plots import (
    PALETTE,
    DecompositionDisplay,
    DeltaHeatmapDisplay,
    EtaDisplay,
    ForestDisplay,
    ShiftDeltaDisplay,
)

RUNS = simulate_runs(selection_effect=-0.2, shift_effect=0.1, behaviours=("syc", "rh"), seed=0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_decomposition_bars_have_intervals_and_readable_labels(tmp_path):
    display = DecompositionDisplay.from_frame(decompose(RUNS, n_boot=200)).plot()
    assert [t.get_text() for t in display.ax_.get_xticklabels()] == ["syc", "rh"]
    bars = display.ax_.patches
    assert len(bars) == 4 and bars[0].get_facecolor()[:3] == matplotlib.colors.to_rgb(PALETTE[0])
    for suffix in ("png", "svg"):
        assert display.save(tmp_path / f"d.{suffix}").stat().st_size > 1000


def test_forest_rows_are_behaviour_by_term_on_a_given_axis():
    _, ax = plt.subplots()
    frame = decompose(RUNS, n_boot=200).filter(pl.col("method").is_null())
    display = ForestDisplay.from_frame(frame).plot(ax=ax)
    assert display.ax_ is ax
    labels = {t.get_text() for t in ax.get_yticklabels()}
    assert labels == {f"{b} · {t}" for b in ("syc", "rh") for t in ("selection", "labelling_shift")}


def test_shift_vs_delta_draws_a_line_per_behaviour():
    display = ShiftDeltaDisplay.from_frame(RUNS).plot()
    assert len(display.ax_.lines) == 2 + 1  # two fitted lines and the zero line
    with pytest.raises(ShiftlabError, match="no run has both shift_mmd and delta"):
        ShiftDeltaDisplay.from_frame(RUNS.with_columns(pl.lit(None, pl.Float64).alias("shift_mmd")),
                                     "shift_mmd")  # fmt: skip


def test_eta_and_heatmap():
    pool = pl.DataFrame([{"score": s / 50, "misbehaving": float(s < 20), "chosen": s > 30,
                          "behaviour": "syc", "method": "m"} for s in range(50)])  # fmt: skip
    eta = EtaDisplay.from_frame(eta_curve(pool, n_bins=5)).plot()
    assert eta.ax_.get_ylim() == (-0.02, 1.02)
    heat = DeltaHeatmapDisplay.from_frame(RUNS).plot()
    image = heat.ax_.images[0]
    assert image.get_array().shape == (RUNS["organism_id"].n_unique(), 8)
    with pytest.raises(ShiftlabError, match=r"call \.plot\(\) before \.save\(\)"):
        DeltaHeatmapDisplay.from_frame(RUNS).save("x.png")


def test_a_frame_missing_columns_is_named():
    with pytest.raises(ShiftlabError, match=r"needs column\(s\) ci_low, ci_high"):
        ForestDisplay.from_frame(pl.DataFrame({"behaviour": ["b"], "term": ["t"],
                                               "estimate": [1.0]}))  # fmt: skip
