"""Interoperability with the tools researchers already use: inspect_ai logs both ways.

:func:`export_inspect` writes a finished store's evaluations as inspect_ai ``.eval`` logs
(one per run, organism and base evaluation), so ``inspect view`` and
``inspect_ai.analysis.samples_df`` read shiftlab results; :func:`compare_samples` pairs
two evaluations of the same samples (two inspect logs, or two pandas or polars sample
frames) and reports the paired difference with a cluster-robust interval and the
sign-flip test over clusters. Needs ``pip install 'shiftlab[inspect]'`` for logs.
"""

from __future__ import annotations

from shiftlab.interop._compare import PairedComparison, compare_samples, sample_frame
from shiftlab.interop._inspect import export_inspect

__all__ = ["PairedComparison", "compare_samples", "export_inspect", "sample_frame"]
