"""shiftlab: selection or distribution shift? Ablations of consistency training.

>>> import shiftlab
>>> shiftlab.__version__
'0.1.0'
"""

from shiftlab._version import __version__
from shiftlab.errors import DataError, ModelError, ShiftlabError, SpecError, StoreError

__all__ = [
    "DataError",
    "ModelError",
    "ShiftlabError",
    "SpecError",
    "StoreError",
    "__version__",
]
