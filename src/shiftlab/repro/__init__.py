"""Scripted reproducibility checks: does a finished store still follow from its manifests?

:func:`record_fingerprints` stores a reference fingerprint of every artefact in
``<store>/repro/fingerprints.json``: a hash per table row, each manifest's config, every
run's per-step losses, eval metrics and shift statistics. :func:`check_reproduction`
verifies the store against it and re-executes a sample of runs from their manifests in a
scratch store (training, evaluation and shift, on the store's own organisms and samples),
then compares artefact by artefact:

- deterministic CPU artefacts (tables, eval outputs, training targets, adapter weights):
  exact equality;
- loss curves: an absolute tolerance per step plus a zero-mean test of the residuals, so a
  drift to one side fails even when every step is inside the tolerance;
- sampled metrics (behaviour rates, shift statistics and their permutation p-values): a
  statistical tolerance.

>>> import tempfile
>>> from shiftlab.store import Store
>>> record_fingerprints(Store.open(tempfile.mkdtemp()))
Traceback (most recent call last):
...
shiftlab.errors.StoreError: ...: not a shiftlab store (no manifest.json)
"""

from shiftlab.repro._check import check_reproduction
from shiftlab.repro._compare import (
    compare_capability,
    compare_frames,
    compare_losses,
    compare_rates,
    compare_statistic,
)
from shiftlab.repro._fingerprints import (
    fingerprint_store,
    frame_fingerprint,
    read_fingerprints,
    record_fingerprints,
)
from shiftlab.repro._types import FINGERPRINTS, Finding, ReproReport, Tolerances

__all__ = [
    "FINGERPRINTS",
    "Finding",
    "ReproReport",
    "Tolerances",
    "check_reproduction",
    "compare_capability",
    "compare_frames",
    "compare_losses",
    "compare_rates",
    "compare_statistic",
    "fingerprint_store",
    "frame_fingerprint",
    "read_fingerprints",
    "record_fingerprints",
]
