"""Checks every analysis and display makes of the frames it is given."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

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


F = TypeVar("F", bound=Callable[..., Any])


def as_polars(value: Any) -> Any:
    """A pandas DataFrame as a polars one; anything else as it is.

    >>> import pandas as pd
    >>> as_polars(pd.DataFrame({"delta": [0.1, -0.2]}))["delta"].to_list()
    [0.1, -0.2]
    """
    pandas = sys.modules.get("pandas")  # a pandas frame means pandas is imported
    if pandas is not None and isinstance(value, pandas.DataFrame):
        return pl.from_pandas(value)
    return value


def accepts_pandas(function: F) -> F:
    """``function`` taking pandas DataFrames wherever it takes polars ones (each is
    converted with :func:`polars.from_pandas`); it still returns polars."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return function(*map(as_polars, args), **{k: as_polars(v) for k, v in kwargs.items()})

    return cast(F, wrapper)
