"""Display classes: each is built from one tidy frame and draws one figure.

As in scikit-learn: ``Display.from_frame(frame, ...)`` checks the frame and computes
everything the figure shows (positions, labels, intervals, fitted lines) and keeps it;
``.plot(ax=None, **style)`` only draws, onto ``ax`` (a new figure when None), passing
``style`` on to the matplotlib call that draws the data, and keeps what it drew
(``errorbars_``, ``bars_``, ``lines_``, ``image_``, ...) beside ``ax_`` and ``figure_``;
``.save(path)`` writes the figure (PNG, SVG or PDF by suffix). matplotlib is imported
only when a figure is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shiftlab._frames import require_columns
from shiftlab.errors import ShiftlabError

# Okabe-Ito: distinguishable under the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


# What each shift column measures, for axis labels.
SHIFT_UNITS = {
    "shift_mmd": "MMD², encoder kernel units",
    "shift_energy": "energy distance, encoder units",
    "shift_c2st_auc": "classifier AUC",
    "shift_nll_gap": "nats per token",
    "output_shift_mmd": "MMD², encoder kernel units",
}


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _values(frame: pl.DataFrame, column: str) -> np.ndarray:
    """A column as floats, nulls as NaN (matplotlib leaves NaN out)."""
    return frame[column].cast(pl.Float64).fill_null(float("nan")).to_numpy()


@dataclass
class _Display:
    frame: pl.DataFrame
    ax_: Any = field(default=None, init=False, repr=False)
    figure_: Any = field(default=None, init=False, repr=False)

    def _axes(self, ax: Any, size: tuple[float, float]) -> Any:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=size, layout="constrained")
        self.ax_, self.figure_ = ax, ax.figure
        return ax

    def save(self, path: str | Path, *, dpi: int = 150) -> Path:
        """Write the drawn figure to ``path`` (its suffix picks the format)."""
        if self.figure_ is None:
            raise ShiftlabError("nothing drawn yet: call .plot() before .save()")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure_.savefig(path, dpi=dpi)
        return path


@dataclass
class ForestDisplay(_Display):
    """Estimates with 95% intervals, one row per behaviour x term (an estimate frame);
    ``plot(**style)`` goes to ``Axes.errorbar``, one call per term (``errorbars_``).

    >>> from shiftlab.attribution import decompose, simulate_runs
    >>> table = decompose(simulate_runs(selection_effect=-0.2, seed=0))
    >>> display = ForestDisplay.from_frame(table.filter(pl.col("method").is_null())).plot()
    >>> len(display.ax_.get_yticklabels()), len(display.errorbars_)
    (5, 5)
    """

    reference: float = 0.0
    xlabel: str = "estimate (95% CI)"
    errorbars_: list[Any] = field(default_factory=list, init=False, repr=False)

    @classmethod
    def from_frame(
        cls, frame: pl.DataFrame, *, reference: float = 0.0, xlabel: str = "estimate (95% CI)"
    ) -> ForestDisplay:
        """``reference``: where the dashed line of no effect is drawn (0.5 for a share
        of organisms that went down); ``xlabel``: what the estimates are, with units."""
        require_columns(frame, ["behaviour", "term", "estimate", "ci_low", "ci_high"],
                        "a forest plot")  # fmt: skip
        kept = frame.drop_nulls(["estimate"])
        if kept.is_empty():
            raise ShiftlabError("a forest plot needs at least one estimate")
        method = pl.col("method") if "method" in kept.columns else pl.lit(None)
        rows = kept.with_columns(
            pl.concat_str([pl.col("behaviour").fill_null("all"), method, "term"],
                          separator=" · ", ignore_nulls=True).alias("label"),
            pl.int_range(pl.len() - 1, -1, -1).alias("y"),
        )  # fmt: skip
        return cls(rows, reference, xlabel)

    def plot(self, ax: Any = None, **style: Any) -> ForestDisplay:
        ax = self._axes(ax, (6.4, 0.45 * self.frame.height + 1.2))
        terms = list(dict.fromkeys(self.frame["term"]))
        self.errorbars_ = []
        for i, term in enumerate(terms):
            part = self.frame.filter(term=term)
            estimate = _values(part, "estimate")
            error = [estimate - _values(part, "ci_low"), _values(part, "ci_high") - estimate]
            drawn = {"fmt": "o", "capsize": 3, "color": colour(i), "label": term} | style
            self.errorbars_.append(ax.errorbar(estimate, part["y"].to_numpy(), xerr=error, **drawn))
        ax.axvline(self.reference, color="0.5", linewidth=0.8, linestyle="--")
        ax.set_yticks(self.frame["y"].to_list(), self.frame["label"].to_list())
        ax.set_xlabel(self.xlabel)
        if len(terms) > 1:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
        return self


@dataclass
class DecompositionDisplay(_Display):
    """The total change, its selection and label-shift parts and the comparators per
    behaviour, as bars with 95% intervals (the ``decompose`` frame; rows pooled over the
    consistency-training methods unless ``method`` is given); ``plot(**style)`` goes to
    ``Axes.bar``, one call per term (``bars_``)."""

    bars_: list[Any] = field(default_factory=list, init=False, repr=False)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, method: str | None = None) -> DecompositionDisplay:
        require_columns(frame, ["behaviour", "method", "term", "estimate", "ci_low", "ci_high"],
                        "a decomposition plot")  # fmt: skip
        chosen = pl.col("method").is_null() if method is None else pl.col("method") == method
        kept = frame.filter(chosen)
        if kept.is_empty():
            raise ShiftlabError(f"no decomposition rows for method {method or 'all methods'!r}")
        behaviours = list(dict.fromkeys(kept["behaviour"]))
        terms = list(dict.fromkeys(kept["term"]))
        width = 0.8 / len(terms)
        where = {b: j for j, b in enumerate(behaviours)}
        offset = {t: (i - (len(terms) - 1) / 2) * width for i, t in enumerate(terms)}
        placed = kept.with_columns(
            pl.col("behaviour").replace_strict(where, return_dtype=pl.Float64).alias("x")
            + pl.col("term").replace_strict(offset, return_dtype=pl.Float64),
            pl.lit(width).alias("width"),
        )
        return cls(placed)

    def plot(self, ax: Any = None, **style: Any) -> DecompositionDisplay:
        behaviours = list(dict.fromkeys(self.frame["behaviour"]))
        ax = self._axes(ax, (1.8 * len(behaviours) + 3.5, 3.8))
        self.bars_ = []
        for i, term in enumerate(dict.fromkeys(self.frame["term"])):
            part = self.frame.filter(term=term)
            estimate = _values(part, "estimate")
            error = [estimate - _values(part, "ci_low"), _values(part, "ci_high") - estimate]
            drawn = {"yerr": error, "capsize": 3, "color": colour(i),
                     "label": term.replace("_", " ")} | style  # fmt: skip
            self.bars_.append(ax.bar(part["x"].to_numpy(), estimate, part["width"][0], **drawn))
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_xticks(range(len(behaviours)), [b.replace("_", " ") for b in behaviours])
        ax.set_ylabel("Δ behaviour rate (difference of rates, 95% CI)")
        ax.set_ylim(-1.05, 1.05)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
        return self


@dataclass
class ShiftDeltaDisplay(_Display):
    """Each run's shift against its behaviour change, with a least-squares line per
    behaviour (the design table); ``plot(**style)`` goes to ``Axes.scatter``
    (``scatters_``; the fitted lines are ``lines_``)."""

    shift: str = "shift_mmd"
    fits: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    scatters_: list[Any] = field(default_factory=list, init=False, repr=False)
    lines_: list[Any] = field(default_factory=list, init=False, repr=False)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, shift: str = "shift_mmd") -> ShiftDeltaDisplay:
        require_columns(frame, ["behaviour", "delta", shift], "a shift-vs-delta plot")
        kept = frame.drop_nulls(["delta", shift])
        if kept.is_empty():
            raise ShiftlabError(f"no run has both {shift} and delta; was shift measured?")
        fits = {}  # behaviour -> (slope, intercept, lowest and highest shift)
        for (behaviour,), part in kept.group_by("behaviour", maintain_order=True):
            x, y = _values(part, shift), _values(part, "delta")
            if len(np.unique(x)) > 1:
                slope, intercept = np.polyfit(x, y, 1)
                fits[str(behaviour)] = (float(slope), float(intercept), x.min(), x.max())
        return cls(kept, shift, fits)

    def plot(self, ax: Any = None, **style: Any) -> ShiftDeltaDisplay:
        ax = self._axes(ax, (5.6, 4.2))
        self.scatters_, self.lines_ = [], []
        groups = self.frame.group_by("behaviour", maintain_order=True)
        for i, ((behaviour,), part) in enumerate(groups):
            drawn = {"s": 12, "alpha": 0.6, "color": colour(i), "label": str(behaviour)} | style
            self.scatters_.append(
                ax.scatter(_values(part, self.shift), _values(part, "delta"), **drawn)
            )
            if str(behaviour) in self.fits:
                slope, intercept, low, high = self.fits[str(behaviour)]
                grid = np.array([low, high])
                (line,) = ax.plot(grid, intercept + slope * grid, color=colour(i), linewidth=1.5)
                self.lines_.append(line)
        ax.axhline(0, color="0.5", linewidth=0.8, linestyle="--")
        unit = SHIFT_UNITS.get(self.shift)
        ax.set_xlabel(self.shift.replace("_", " ") + (f" ({unit})" if unit else ""))
        ax.set_ylabel("Δ behaviour rate (difference of rates)")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
        return self


@dataclass
class EtaDisplay(_Display):
    """η(s) curves: misbehaviour rate of candidates by selection-score bin, with Wilson
    intervals (the ``eta_curve`` frame): one panel per method (each method scores on its
    own scale), one line per behaviour, the legend outside the panels.

    ``ax`` may be one axis per method; ``axes_`` holds the panels after drawing;
    ``plot(**style)`` goes to ``Axes.plot`` (``lines_``, the bands are ``bands_``).

    >>> from shiftlab.attribution import eta_curve
    >>> pool = pl.DataFrame([{"prompt_id": str(s // 2), "candidate": s % 2, "score": s / 50,
    ...     "misbehaving": float(s < 20), "chosen": s % 2 == 1, "behaviour": "syc",
    ...     "method": m} for s in range(50) for m in ("a", "b")])
    >>> display = EtaDisplay.from_frame(eta_curve(pool, n_bins=5)).plot(linewidth=2)
    >>> len(display.axes_), display.lines_[0].get_linewidth()
    (2, 2.0)
    """

    axes_: Any = field(default=None, init=False, repr=False)
    lines_: list[Any] = field(default_factory=list, init=False, repr=False)
    bands_: list[Any] = field(default_factory=list, init=False, repr=False)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> EtaDisplay:
        require_columns(frame, ["term", "estimate", "ci_low", "ci_high", "score_low",
                                "score_high"], "an eta plot")  # fmt: skip
        kept = frame.filter(term="eta")
        if kept.is_empty():
            raise ShiftlabError("an eta plot needs eta rows (from eta_curve)")
        for column in ("method", "behaviour"):
            if column not in kept.columns:
                kept = kept.with_columns(pl.lit(None, pl.String).alias(column))
        middle = ((pl.col("score_low") + pl.col("score_high")) / 2).alias("score_mid")
        return cls(kept.with_columns(middle))

    def plot(self, ax: Any = None, **style: Any) -> EtaDisplay:
        import matplotlib.pyplot as plt

        methods = list(dict.fromkeys(self.frame["method"]))
        behaviours = list(dict.fromkeys(self.frame["behaviour"]))
        if ax is None:
            _, ax = plt.subplots(1, len(methods), figsize=(3.6 * len(methods) + 1.8, 3.6),
                                 layout="constrained", squeeze=False)  # fmt: skip
            ax = ax[0]
        axes = list(np.atleast_1d(ax))
        if len(axes) != len(methods):
            raise ShiftlabError(f"an eta plot draws {len(methods)} panels; got {len(axes)} axes")
        self.axes_, self.ax_, self.figure_ = axes, axes[0], axes[0].figure
        self.lines_, self.bands_ = [], []
        for panel, method in zip(axes, methods, strict=True):
            mine = self.frame.filter(pl.col("method").eq_missing(method))
            for i, behaviour in enumerate(behaviours):
                part = mine.filter(pl.col("behaviour").eq_missing(behaviour))
                if part.is_empty():
                    continue
                x = _values(part, "score_mid")
                drawn = {"marker": "o", "color": colour(i), "label": str(behaviour or "η")}
                (line,) = panel.plot(x, _values(part, "estimate"), **(drawn | style))
                self.lines_.append(line)
                self.bands_.append(panel.fill_between(
                    x, _values(part, "ci_low"), _values(part, "ci_high"),
                    color=line.get_color(), alpha=0.2,
                ))  # fmt: skip
            panel.set_title(str(method or "all candidates"), fontsize="medium")
            panel.set_xlabel("selection score (the method's own scale)")
            panel.set_ylim(-0.02, 1.02)
        axes[0].set_ylabel("misbehaviour rate η (share of candidates)")
        handles, labels = axes[0].get_legend_handles_labels()
        for panel in axes[1:]:
            more = panel.get_legend_handles_labels()
            handles += [h for h, n in zip(*more, strict=True) if n not in labels]
            labels += [n for n in more[1] if n not in labels]
        self.figure_.legend(handles, labels, loc="outside right upper", fontsize="small")
        return self


@dataclass
class KScalingDisplay(_Display):
    """Mean Δ against the candidate count k, one line per behaviour x method with its 95%
    band (the ``k_scaling`` frame; methods run at a single k are left out);
    ``plot(**style)`` goes to ``Axes.plot`` (``lines_``, the bands are ``bands_``)."""

    lines_: list[Any] = field(default_factory=list, init=False, repr=False)
    bands_: list[Any] = field(default_factory=list, init=False, repr=False)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> KScalingDisplay:
        require_columns(frame, ["behaviour", "method", "k", "mean_delta", "ci_low", "ci_high"],
                        "a k-scaling plot")  # fmt: skip
        kept = (
            frame.drop_nulls(["k", "mean_delta"])
            .filter(pl.col("k").n_unique().over("behaviour", "method") > 1)
            .sort("behaviour", "method", "k")
        )
        if kept.is_empty():
            raise ShiftlabError("a k-scaling plot needs a method with more than one k")
        return cls(kept)

    def plot(self, ax: Any = None, **style: Any) -> KScalingDisplay:
        ax = self._axes(ax, (5.6, 4.0))
        self.lines_, self.bands_ = [], []
        groups = self.frame.group_by("behaviour", "method", maintain_order=True)
        for i, ((behaviour, method), part) in enumerate(groups):
            k = part["k"].to_numpy()
            drawn = {"marker": "o", "color": colour(i), "label": f"{behaviour} · {method}"}
            (line,) = ax.plot(k, _values(part, "mean_delta"), **(drawn | style))
            self.lines_.append(line)
            self.bands_.append(ax.fill_between(
                k, _values(part, "ci_low"), _values(part, "ci_high"), color=line.get_color(),
                alpha=0.2,
            ))  # fmt: skip
        ax.axhline(0, color="0.5", linewidth=0.8, linestyle="--")
        ax.set_xticks(sorted(set(self.frame["k"].to_list())))
        ax.set_xlabel("candidates per prompt k (count)")
        ax.set_ylabel("mean Δ behaviour rate (difference of rates, 95% CI)")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
        return self


@dataclass
class DeltaHeatmapDisplay(_Display):
    """Mean Δ by organism (rows) and method x arm (columns) from the design table; a cell
    with no delta (no run, or nothing judged) is grey and marked "n/a", not coloured
    as 0. ``plot(**style)`` goes to ``Axes.imshow`` (``image_``, ``colorbar_``).

    >>> from shiftlab.attribution import simulate_runs
    >>> runs = simulate_runs(seed=0)
    >>> holes = runs.with_columns(pl.when(pl.col("arm") == "original").then(None)
    ...                           .otherwise(pl.col("delta")).alias("delta"))
    >>> display = DeltaHeatmapDisplay.from_frame(holes).plot()
    >>> sum(t.get_text() == "n/a" for t in display.ax_.texts)
    54
    """

    columns: list[str] = field(default_factory=list)
    image_: Any = field(default=None, init=False, repr=False)
    colorbar_: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> DeltaHeatmapDisplay:
        require_columns(frame, ["organism_id", "method", "arm", "delta"], "a delta heatmap")
        cells = (
            frame.filter(pl.col("arm") != "none")
            .group_by("organism_id", "method", "arm")
            .agg(pl.col("delta").mean())
            .sort("organism_id", "method", "arm")
        )
        if cells["delta"].is_null().all():
            raise ShiftlabError("a delta heatmap needs runs with a delta")
        wide = cells.with_columns(pl.format("{} · {}", "method", "arm").alias("cell")).pivot(
            on="cell", index="organism_id", values="delta", sort_columns=True
        )
        return cls(wide, wide.columns[1:])

    def plot(self, ax: Any = None, **style: Any) -> DeltaHeatmapDisplay:
        import matplotlib

        values = self.frame.select(self.columns).to_numpy().astype(float)
        ax = self._axes(ax, (0.35 * len(self.columns) + 3.5, 0.22 * self.frame.height + 2.2))
        limit = float(np.nanmax(np.abs(values))) or 1.0
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")
        drawn = {"cmap": cmap, "vmin": -limit, "vmax": limit, "aspect": "auto"} | style
        self.image_ = ax.imshow(np.ma.masked_invalid(values), **drawn)
        for row, column in zip(*np.nonzero(np.isnan(values)), strict=True):
            ax.text(column, row, "n/a", ha="center", va="center", fontsize="xx-small", color="0.3")
        ax.set_xticks(range(len(self.columns)), self.columns, rotation=60, ha="right",
                      fontsize="small")  # fmt: skip
        ax.set_yticks(range(self.frame.height), self.frame["organism_id"].to_list(),
                      fontsize="x-small")  # fmt: skip
        self.colorbar_ = ax.figure.colorbar(
            self.image_, ax=ax, label="mean Δ behaviour rate (difference of rates)"
        )
        return self
