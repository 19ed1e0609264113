"""What the analysis scripts share: their command line, the store's design table, and
writing tables (parquet and CSV) and figures (PNG) into the output folder."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab.errors import ShiftlabError
from shiftlab.store import Store


def arguments(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None):
    """Parse ``STORE OUT`` (and any options ``extra`` adds)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("store", help="store folder of a finished study")
    parser.add_argument("out", help="folder for the tables (parquet, CSV) and figures (PNG)")
    parser.add_argument("--arm", default="full", help="the arm analysed (default full)")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def design_table(store_path: str) -> tuple[Store, pl.DataFrame]:
    """The store and its design table (``tables/runs.parquet``), or a clear error."""
    root = Path(store_path)
    if not (root / "study.yaml").is_file():
        raise ShiftlabError(f"{root}: not a shiftlab store (no study.yaml)")
    store = Store.open(root)
    return store, store.read_table("runs")


def write_table(frame: pl.DataFrame, out: Path, name: str) -> None:
    """``<out>/<name>.parquet`` and ``.csv`` (list columns joined with '; ' for CSV)."""
    out.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(out / f"{name}.parquet")
    flat = frame.with_columns(
        pl.col(c).list.join("; ") for c, t in frame.schema.items() if isinstance(t, pl.List)
    )
    flat.write_csv(out / f"{name}.csv")


def save_figure(display: Any, out: Path, name: str) -> None:
    """Draw ``display`` and write ``<out>/<name>.png``."""
    import matplotlib.pyplot as plt

    display.plot().save(out / f"{name}.png")
    plt.close(display.figure_)


def _note(message: Any, *_: Any, **__: Any) -> None:
    print(f"note: {message}", file=sys.stderr)


def run(main: Callable[[], None]) -> None:
    """Run a script's ``main``: warnings print as one-line notes, and input errors print
    one line and exit with status 2."""
    warnings.showwarning = _note
    try:
        main()
    except ShiftlabError as error:
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        sys.exit(2)


def shown(value: float | None, spec: str = ".3g") -> str:
    """A number for a summary line; 'n/a' when missing."""
    return "n/a" if value is None else format(value, spec)
