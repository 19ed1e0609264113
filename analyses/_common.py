"""What the analysis scripts share: their command line, the store's design table, and
writing tables (parquet and CSV) and figures (PNG) into the output folder."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab.errors import ShiftlabError
from shiftlab.store import Store


def arguments(
    description: str,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
    *,
    arm: bool = False,
):
    """Parse ``STORE OUT`` (plus ``--arm`` when ``arm``, and any options ``extra`` adds)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("store", help="store folder of a finished study")
    parser.add_argument("out", help="folder for the tables (parquet, CSV) and figures (PNG)")
    if arm:
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


@contextlib.contextmanager
def outputs(out: Path) -> Iterator[Path]:
    """A folder to write a script's files into; they are moved into ``out`` together at
    the end, so a script that fails half-way leaves no half-filled output."""
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out))
    try:
        yield staging
        for path in sorted(staging.iterdir()):
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_table(frame: pl.DataFrame, out: Path, name: str) -> None:
    """``<out>/<name>.parquet`` and ``.csv`` (list columns joined with '; ' for CSV)."""
    frame.write_parquet(out / f"{name}.parquet")
    flat = frame.with_columns(
        pl.col(c).cast(pl.List(pl.String)).list.join("; ")
        for c, t in frame.schema.items()
        if isinstance(t, pl.List)
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
