"""Checks every analysis and display makes of the frames it is given."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from shiftlab.errors import ShiftlabError


def require_columns(frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    """A clear error naming every column ``what`` needs and ``frame`` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ShiftlabError(
            f"{what} needs column(s) {', '.join(missing)}; the table has "
            f"{', '.join(frame.columns) or 'no columns'}"
        )
