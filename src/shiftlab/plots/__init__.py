"""Plots of attribution frames: one Display class per figure, matplotlib imported lazily.

>>> from shiftlab.attribution import decompose, simulate_runs
>>> frame = decompose(simulate_runs(selection_effect=-0.2, seed=0))
>>> display = DecompositionDisplay.from_frame(frame).plot()
>>> [t.get_text() for t in display.ax_.get_legend().get_texts()]
['total', 'selection', 'label shift', 'relabeling', 'reference']
"""

from __future__ import annotations

from shiftlab.plots._displays import (
    PALETTE,
    SHIFT_UNITS,
    DecompositionDisplay,
    DeltaHeatmapDisplay,
    EtaDisplay,
    ForestDisplay,
    KScalingDisplay,
    ShiftDeltaDisplay,
)

__all__ = [
    "PALETTE",
    "SHIFT_UNITS",
    "DecompositionDisplay",
    "DeltaHeatmapDisplay",
    "EtaDisplay",
    "ForestDisplay",
    "KScalingDisplay",
    "ShiftDeltaDisplay",
]
