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
    display = DecompositionDisplay.from_frame(decompose(RUNS)).plot()
    assert [t.get_text() for t in display.ax_.get_xticklabels()] == ["rh", "syc"]
    bars = display.ax_.patches
    assert len(bars) == 10 and bars[0].get_facecolor()[:3] == matplotlib.colors.to_rgb(PALETTE[0])
    assert "difference of rates" in display.ax_.get_ylabel()
    for suffix in ("png", "svg"):
        assert display.save(tmp_path / f"d.{suffix}").stat().st_size > 1000


def test_forest_rows_are_behaviour_by_term_on_a_given_axis():
    _, ax = plt.subplots()
    frame = decompose(RUNS).filter(pl.col("method").is_null(), pl.col("term") != "total")
    display = ForestDisplay.from_frame(frame).plot(ax=ax)
    assert display.ax_ is ax
    labels = {t.get_text() for t in ax.get_yticklabels()}
    terms = ("selection", "label_shift", "relabeling", "reference")
    assert labels == {f"{b} · {t}" for b in ("syc", "rh") for t in terms}


def test_a_share_is_drawn_against_its_reference_of_one_half():
    from shiftlab.attribution import sign_tests

    shares = sign_tests(RUNS).filter(analysis="sign_test")
    display = ForestDisplay.from_frame(
        shares, reference=0.5, xlabel="share of moved organisms that went down"
    ).plot()
    assert display.ax_.lines[-1].get_xdata()[0] == 0.5
    assert display.ax_.get_xlabel() == "share of moved organisms that went down"


def test_shift_vs_delta_draws_a_line_per_behaviour():
    display = ShiftDeltaDisplay.from_frame(RUNS).plot()
    assert len(display.ax_.lines) == 2 + 1  # two fitted lines and the zero line
    assert display.ax_.get_xlabel() == "shift mmd (MMD², encoder kernel units)"
    with pytest.raises(ShiftlabError, match="no run has both shift_mmd and delta"):
        ShiftDeltaDisplay.from_frame(RUNS.with_columns(pl.lit(None, pl.Float64).alias("shift_mmd")),
                                     "shift_mmd")  # fmt: skip


def test_eta_has_a_panel_per_method_and_its_legend_outside():
    pool = pl.DataFrame([{"prompt_id": str(s // 2), "candidate": s % 2, "score": s / 50,
                          "misbehaving": float(s < 20), "chosen": s % 2 == 1, "behaviour": b,
                          "method": m} for s in range(50) for b in ("syc", "rh")
                         for m in ("a", "b", "c")])  # fmt: skip
    eta = EtaDisplay.from_frame(eta_curve(pool, n_bins=5)).plot()
    assert [panel.get_title() for panel in eta.axes_] == ["a", "b", "c"]
    assert all(panel.get_ylim() == (-0.02, 1.02) for panel in eta.axes_)
    assert all(panel.get_legend() is None for panel in eta.axes_)  # one legend, outside
    assert [t.get_text() for t in eta.figure_.legends[0].get_texts()] == ["syc", "rh"]
    with pytest.raises(ShiftlabError, match="draws 3 panels; got 1 axes"):
        EtaDisplay.from_frame(eta_curve(pool)).plot(ax=plt.subplots()[1])


def test_the_heatmap_marks_missing_cells():
    heat = DeltaHeatmapDisplay.from_frame(RUNS).plot()
    image = heat.ax_.images[0]
    assert image.get_array().shape == (RUNS["organism_id"].n_unique(), 8)
    assert not any(t.get_text() == "n/a" for t in heat.ax_.texts)
    # One base model's organisms have no multi_view shuffled run: 9 organisms x 2 behaviours.
    gaps = RUNS.filter(~((pl.col("arm") == "shuffled") & (pl.col("method") == "multi_view")
                         & pl.col("organism_id").str.starts_with("base0")))  # fmt: skip
    marked = DeltaHeatmapDisplay.from_frame(gaps).plot()
    assert sum(t.get_text() == "n/a" for t in marked.ax_.texts) == 18
    with pytest.raises(ShiftlabError, match=r"call \.plot\(\) before \.save\(\)"):
        DeltaHeatmapDisplay.from_frame(RUNS).save("x.png")


def test_a_frame_missing_columns_is_named():
    with pytest.raises(ShiftlabError, match=r"needs column\(s\) ci_low, ci_high"):
        ForestDisplay.from_frame(pl.DataFrame({"behaviour": ["b"], "term": ["t"],
                                               "estimate": [1.0]}))  # fmt: skip


def test_style_goes_to_the_data_and_the_artists_are_kept():
    """The scikit-learn Display contract: from_frame computes, plot draws with **style."""
    from shiftlab.plots import KScalingDisplay

    bars = DecompositionDisplay.from_frame(decompose(RUNS)).plot(alpha=0.5)
    assert len(bars.bars_) == 5 and all(p.get_alpha() == 0.5 for b in bars.bars_ for p in b)
    forest = ForestDisplay.from_frame(decompose(RUNS).filter(pl.col("method").is_null()))
    assert "label" in forest.frame.columns and forest.ax_ is None  # computed, not drawn
    forest.plot(markersize=9)
    assert forest.errorbars_[0].lines[0].get_markersize() == 9
    scatter = ShiftDeltaDisplay.from_frame(RUNS).plot(marker="x")
    assert len(scatter.scatters_) == 2 and set(scatter.fits) == {"syc", "rh"}
    heat = DeltaHeatmapDisplay.from_frame(RUNS).plot(cmap="viridis")
    assert heat.image_.get_cmap().name == "viridis" and heat.colorbar_ is not None
    scaling = pl.DataFrame({"behaviour": ["syc"] * 2, "method": ["sc"] * 2, "k": [1, 4],
                            "mean_delta": [0.0, 0.2], "ci_low": [-0.1, 0.1],
                            "ci_high": [0.1, 0.3]})  # fmt: skip
    lines = KScalingDisplay.from_frame(scaling).plot(linestyle=":")
    assert lines.lines_[0].get_linestyle() == ":" and len(lines.bands_) == 1
