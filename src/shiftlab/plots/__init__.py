"""Plots of attribution frames: one Display class per figure, matplotlib imported lazily.

>>> from shiftlab.attribution import decompose, simulate_runs
>>> frame = decompose(simulate_runs(selection_effect=-0.2, seed=0), n_boot=200)
>>> display = DecompositionDisplay.from_frame(frame).plot()
>>> [t.get_text() for t in display.ax_.get_legend().get_texts()]
['selection', 'labelling shift']
"""

from __future__ import annotations

from shiftlab.plots._displays import (
    PALETTE,
    DecompositionDisplay,
    DeltaHeatmapDisplay,
    EtaDisplay,
    ForestDisplay,
    KScalingDisplay,
    ShiftDeltaDisplay,
)

__all__ = [
    "PALETTE",
    "DecompositionDisplay",
    "DeltaHeatmapDisplay",
    "EtaDisplay",
    "ForestDisplay",
    "KScalingDisplay",
    "ShiftDeltaDisplay",
]
