"""The user cache folder (converted models, retrained toyworld bases)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SHIFTLAB_CACHE`` or ``~/.cache/shiftlab``."""
    return Path(os.environ.get("SHIFTLAB_CACHE", Path.home() / ".cache" / "shiftlab")).expanduser()
