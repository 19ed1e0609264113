"""Display classes: each is built from one tidy frame and draws one figure.

``Display.from_frame(frame, ...)`` checks the frame and keeps it; ``.plot(ax=None)``
draws onto ``ax`` (a new figure when None) and returns the display with ``ax_`` and
``figure_`` set; ``.save(path)`` writes the figure (PNG, SVG or PDF by suffix).
matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shiftlab.attribution._frame import require_columns
from shiftlab.errors import ShiftlabError

# Okabe-Ito: distinguishable under the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


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
    """Estimates with 95% intervals, one row per behaviour x term (an estimate frame).

    >>> from shiftlab.attribution import decompose, simulate_runs
    >>> table = decompose(simulate_runs(selection_effect=-0.2, seed=0), n_boot=200)
    >>> display = ForestDisplay.from_frame(table.filter(pl.col("method").is_null())).plot()
    >>> len(display.ax_.get_yticklabels())
    2
    """

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> ForestDisplay:
        require_columns(frame, ["behaviour", "term", "estimate", "ci_low", "ci_high"],
                        "a forest plot")  # fmt: skip
        kept = frame.drop_nulls(["estimate"])
        if kept.is_empty():
            raise ShiftlabError("a forest plot needs at least one estimate")
        return cls(kept)

    def plot(self, ax: Any = None) -> ForestDisplay:
        method = pl.col("method") if "method" in self.frame.columns else pl.lit(None)
        rows = self.frame.with_columns(
            pl.concat_str(
                [pl.col("behaviour").fill_null("all"), method, "term"],
                separator=" · ",
                ignore_nulls=True,
            ).alias("label")
        )
        ax = self._axes(ax, (6.4, 0.45 * rows.height + 1.2))
        y = np.arange(rows.height)[::-1]
        terms = list(dict.fromkeys(rows["term"]))
        for i, term in enumerate(terms):
            mine = (rows["term"] == term).to_numpy()
            estimate = rows["estimate"].to_numpy()[mine]
            low = rows["ci_low"].fill_null(float("nan")).to_numpy()[mine]
            high = rows["ci_high"].fill_null(float("nan")).to_numpy()[mine]
            ax.errorbar(estimate, y[mine], xerr=[estimate - low, high - estimate], fmt="o",
                        color=colour(i), capsize=3, label=term)  # fmt: skip
        ax.axvline(0, color="0.5", linewidth=0.8, linestyle="--")
        ax.set_yticks(y, rows["label"].to_list())
        ax.set_xlabel("estimate (95% CI)")
        if len(terms) > 1:
            ax.legend(loc="best", fontsize="small")
        return self


@dataclass
class DecompositionDisplay(_Display):
    """Selection vs labelling-shift effects per behaviour, as bars with 95% intervals
    (the ``decompose`` frame; rows over all methods unless ``method`` is given)."""

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, method: str | None = None) -> DecompositionDisplay:
        require_columns(frame, ["behaviour", "method", "term", "estimate", "ci_low", "ci_high"],
                        "a decomposition plot")  # fmt: skip
        chosen = pl.col("method").is_null() if method is None else pl.col("method") == method
        kept = frame.filter(chosen)
        if kept.is_empty():
            raise ShiftlabError(f"no decomposition rows for method {method or 'all methods'!r}")
        return cls(kept)

    def plot(self, ax: Any = None) -> DecompositionDisplay:
        behaviours = list(dict.fromkeys(self.frame["behaviour"]))
        terms = list(dict.fromkeys(self.frame["term"]))
        ax = self._axes(ax, (1.6 * len(behaviours) + 2.5, 3.6))
        width = 0.8 / len(terms)
        for i, term in enumerate(terms):
            part = self.frame.filter(term=term)
            where = {b: j for j, b in enumerate(behaviours)}
            x = np.array([where[b] for b in part["behaviour"]]) + (i - (len(terms) - 1) / 2) * width
            estimate = part["estimate"].to_numpy()
            error = [estimate - part["ci_low"].to_numpy(), part["ci_high"].to_numpy() - estimate]
            ax.bar(x, estimate, width, yerr=error, capsize=3, color=colour(i),
                   label=term.replace("_", " "))  # fmt: skip
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_xticks(range(len(behaviours)), [b.replace("_", " ") for b in behaviours])
        ax.set_ylabel("effect on behaviour rate (95% CI)")
        ax.legend(fontsize="small")
        return self


@dataclass
class ShiftDeltaDisplay(_Display):
    """Each run's shift against its behaviour change, with a least-squares line per
    behaviour (the design table)."""

    shift: str = "shift_kl"

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, shift: str = "shift_kl") -> ShiftDeltaDisplay:
        require_columns(frame, ["behaviour", "delta", shift], "a shift-vs-delta plot")
        kept = frame.drop_nulls(["delta", shift])
        if kept.is_empty():
            raise ShiftlabError(f"no run has both {shift} and delta; was shift measured?")
        return cls(kept, shift)

    def plot(self, ax: Any = None) -> ShiftDeltaDisplay:
        ax = self._axes(ax, (5.6, 4.2))
        for i, ((behaviour,), part) in enumerate(
            self.frame.group_by("behaviour", maintain_order=True)
        ):
            x, y = part[self.shift].to_numpy(), part["delta"].to_numpy()
            ax.scatter(x, y, s=12, alpha=0.6, color=colour(i), label=str(behaviour))
            if len(np.unique(x)) > 1:
                slope, intercept = np.polyfit(x, y, 1)
                grid = np.linspace(x.min(), x.max(), 2)
                ax.plot(grid, intercept + slope * grid, color=colour(i), linewidth=1.5)
        ax.axhline(0, color="0.5", linewidth=0.8, linestyle="--")
        ax.set_xlabel(self.shift.replace("_", " "))
        ax.set_ylabel("Δ behaviour rate")
        ax.legend(fontsize="small")
        return self


@dataclass
class EtaDisplay(_Display):
    """η(s) curves: misbehaviour rate of candidates by selection-score bin, with Wilson
    intervals (the ``eta_curve`` frame), one line per behaviour x method."""

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> EtaDisplay:
        require_columns(frame, ["term", "estimate", "ci_low", "ci_high", "score_low",
                                "score_high"], "an eta plot")  # fmt: skip
        kept = frame.filter(term="eta")
        if kept.is_empty():
            raise ShiftlabError("an eta plot needs eta rows (from eta_curve)")
        return cls(kept)

    def plot(self, ax: Any = None) -> EtaDisplay:
        ax = self._axes(ax, (5.6, 4.0))
        keys = [
            c for c in ("behaviour", "method") if self.frame[c].null_count() < self.frame.height
        ]
        groups = self.frame.group_by(keys, maintain_order=True) if keys else [((), self.frame)]
        for i, (key, part) in enumerate(groups):
            x = ((part["score_low"] + part["score_high"]) / 2).to_numpy()
            ax.plot(x, part["estimate"].to_numpy(), marker="o", color=colour(i),
                    label=" · ".join(str(k) for k in key) or "η")  # fmt: skip
            ax.fill_between(x, part["ci_low"].to_numpy(), part["ci_high"].to_numpy(),
                            color=colour(i), alpha=0.2)  # fmt: skip
        ax.set_xlabel("selection score (bin centre)")
        ax.set_ylabel("misbehaviour rate η")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize="small")
        return self


@dataclass
class KScalingDisplay(_Display):
    """Mean Δ against the candidate count k, one line per behaviour x method with its 95%
    band (the ``k_scaling`` frame; methods run at a single k are left out)."""

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

    def plot(self, ax: Any = None) -> KScalingDisplay:
        ax = self._axes(ax, (5.6, 4.0))
        groups = self.frame.group_by("behaviour", "method", maintain_order=True)
        for i, ((behaviour, method), part) in enumerate(groups):
            k = part["k"].to_numpy()
            ax.plot(k, part["mean_delta"].to_numpy(), marker="o", color=colour(i),
                    label=f"{behaviour} · {method}")  # fmt: skip
            low = part["ci_low"].fill_null(float("nan")).to_numpy()
            high = part["ci_high"].fill_null(float("nan")).to_numpy()
            ax.fill_between(k, low, high, color=colour(i), alpha=0.2)
        ax.axhline(0, color="0.5", linewidth=0.8, linestyle="--")
        ax.set_xticks(sorted(set(self.frame["k"].to_list())))
        ax.set_xlabel("candidates per prompt k")
        ax.set_ylabel("mean Δ behaviour rate (95% CI)")
        ax.legend(fontsize="small")
        return self


@dataclass
class DeltaHeatmapDisplay(_Display):
    """Mean Δ by organism (rows) and method x arm (columns) from the design table."""

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> DeltaHeatmapDisplay:
        require_columns(frame, ["organism_id", "method", "arm", "delta"], "a delta heatmap")
        cells = (
            frame.filter(pl.col("arm") != "none")
            .drop_nulls("delta")
            .group_by("organism_id", "method", "arm")
            .agg(pl.col("delta").mean())
            .sort("organism_id", "method", "arm")
        )
        if cells.is_empty():
            raise ShiftlabError("a delta heatmap needs runs with a delta")
        return cls(cells)

    def plot(self, ax: Any = None) -> DeltaHeatmapDisplay:
        wide = self.frame.with_columns(pl.format("{} · {}", "method", "arm").alias("cell")).pivot(
            on="cell", index="organism_id", values="delta", sort_columns=True
        )
        columns = wide.columns[1:]
        values = wide.select(columns).to_numpy().astype(float)
        ax = self._axes(ax, (0.35 * len(columns) + 3.5, 0.22 * wide.height + 2.2))
        limit = float(np.nanmax(np.abs(values))) or 1.0
        image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize="small")
        ax.set_yticks(range(wide.height), wide["organism_id"].to_list(), fontsize="x-small")
        ax.figure.colorbar(image, ax=ax, label="mean Δ behaviour rate")
        return self
