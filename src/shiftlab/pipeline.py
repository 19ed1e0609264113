"""Moved to :mod:`shiftlab.study`; this module keeps the import path the README once
documented (``shiftlab.pipeline.base_model_facts``) working, with a warning."""

import warnings

from shiftlab.study import base_model_facts

warnings.warn(
    "shiftlab.pipeline moved to shiftlab.study; import base_model_facts from there",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["base_model_facts"]
