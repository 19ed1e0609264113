"""shiftlab: selection or distribution shift? Ablations of consistency training.

The package's face: :func:`load_spec` / :func:`parse_spec` read a study spec,
:func:`open_store` opens a store, :func:`run_study` builds the study into it, and the
attribution analyses (:func:`decompose`, :func:`attribute`, :func:`sign_tests`,
:func:`mediation`, ...) read its design table, as pandas or polars. They are imported on
first use, so ``import shiftlab`` stays cheap and loads neither torch nor polars.

>>> import shiftlab
>>> shiftlab.__version__
'0.1.0'
>>> shiftlab.decompose is shiftlab.attribution.decompose
True
"""

from __future__ import annotations

import importlib

from shiftlab._version import __version__
from shiftlab.errors import DataError, ModelError, ShiftlabError, SpecError, StoreError

# typing costs more to import than the rest of `import shiftlab`; only checkers need it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Public name -> the module it comes from, imported when the name is first used.
_LAZY = {
    "open_store": "shiftlab.store",
    "Store": "shiftlab.store",
    "load_spec": "shiftlab.spec",
    "parse_spec": "shiftlab.spec",
    "run_study": "shiftlab.study",
    "study_status": "shiftlab.study",
    "export_inspect": "shiftlab.interop",
    "compare_samples": "shiftlab.interop",
    "track_study": "shiftlab.tracking",
    **{
        name: "shiftlab.attribution"
        for name in (
            "attribute", "decompose", "eta_curve", "fit_cluster_ols", "fit_fixed_effects",
            "fit_mixed", "k_scaling", "mediation", "method_table", "moderator_table",
            "organism_mean", "sign_flip", "sign_tests", "simulate_runs",
        )
    },
}  # fmt: skip

__all__ = [
    "DataError",
    "ModelError",
    "ShiftlabError",
    "SpecError",
    "StoreError",
    "__version__",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'shiftlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
