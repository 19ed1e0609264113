"""Verdicts only where the data can carry them: which part of a change, if any, the
decomposition attributes it to, and why not when it cannot."""

from __future__ import annotations

from typing import Any

import polars as pl

from shiftlab.attribution._frame import require_columns
from shiftlab.attribution._inference import MIN_ORGANISMS

PART_NAMES = {"selection": "selection", "label_shift": "label shift"}
VERDICT_SCHEMA: dict[str, Any] = {
    "behaviour": pl.String,
    "method": pl.String,
    "role": pl.String,
    "n_organisms": pl.Int64,
    **{f"{term}{suffix}": pl.Float64 for term in ("total", "selection", "label_shift")
       for suffix in ("", "_ci_low", "_ci_high", "_p_value")},
    "p_min": pl.Float64,
    "attributed_to": pl.String,
    "reason": pl.String,
}  # fmt: skip


def _clear(row: dict[str, Any]) -> bool:
    return row["ci_low"] > 0 or row["ci_high"] < 0


def _verdict(
    parts: dict[str, dict[str, Any]], has_selection: bool, min_organisms: int
) -> tuple[str | None, str]:
    """(what the change is attributed to, the reason) for one behaviour x method."""
    total = parts["total"]
    g = total["n_clusters"]
    if not has_selection:
        return None, "no selection step: full and shuffled train on the same labels"
    if g < min_organisms:
        return None, f"G = {g} organisms; at least {min_organisms} are needed"
    if not _clear(total):
        return None, "the total's interval includes 0: no change to attribute"
    sign = 1 if total["estimate"] > 0 else -1
    carried = [t for t in PART_NAMES if _clear(parts[t]) and parts[t]["estimate"] * sign > 0]
    if not carried:
        return None, "neither part has the change's sign with an interval that excludes 0"
    names = " and ".join(PART_NAMES[t] for t in carried)
    return ("both" if len(carried) == 2 else carried[0]), (
        f"{names} {'have' if len(carried) == 2 else 'has'} the change's sign and "
        f"{'their intervals exclude' if len(carried) == 2 else 'its interval excludes'} 0 "
        f"with G = {g} organisms"
    )


def attribute(decomposition: pl.DataFrame, *, min_organisms: int = MIN_ORGANISMS) -> pl.DataFrame:
    """One row per behaviour x method of a :func:`decompose` frame that has a total and
    both parts (pooled rows: ``method`` null): the three with their intervals and
    p-values, and ``attributed_to`` (``selection``, ``label_shift``, ``both`` or null)
    with its ``reason``.

    A part is credited only when the total's interval excludes 0 (there is a change),
    the part has the total's sign, its interval excludes 0, and there are at least
    ``min_organisms`` organisms; otherwise ``reason`` says which condition failed.

    >>> from shiftlab.attribution import decompose, simulate_runs
    >>> runs = simulate_runs(selection_effect=-0.2, seed=0)
    >>> pooled = attribute(decompose(runs)).filter(pl.col("method").is_null())
    >>> pooled["attributed_to"].item()
    'selection'
    >>> pooled["reason"].item()
    "selection has the change's sign and its interval excludes 0 with G = 27 organisms"
    >>> few = simulate_runs(selection_effect=-0.2, n_bases=1, organisms_per_base=2, seed=0)
    >>> attribute(decompose(few)).filter(pl.col("method").is_null())["reason"].item()
    'G = 2 organisms; at least 6 are needed'
    """
    require_columns(decomposition, ["behaviour", "method", "term", "estimate", "ci_low",
                                    "ci_high", "p_value", "n_clusters", "has_selection",
                                    "role"], "attribute")  # fmt: skip
    rows = []
    keyed = decomposition.filter(pl.col("term").is_in(["total", *PART_NAMES]))
    for (behaviour, method), group in keyed.group_by("behaviour", "method", maintain_order=True):
        parts = {r["term"]: r for r in group.iter_rows(named=True)}
        if set(parts) != {"total", *PART_NAMES}:
            continue  # a paired-loss method: a total, no parts
        total = parts["total"]
        attributed, reason = _verdict(parts, bool(total["has_selection"]), min_organisms)
        row: dict[str, Any] = {"behaviour": behaviour, "method": method, "role": total["role"],
                               "n_organisms": total["n_clusters"], "p_min": total["p_min"],
                               "attributed_to": attributed, "reason": reason}  # fmt: skip
        for term, part in parts.items():
            row |= {
                term: part["estimate"],
                f"{term}_ci_low": part["ci_low"],
                f"{term}_ci_high": part["ci_high"],
                f"{term}_p_value": part["p_value"],
            }
        rows.append(row)
    return pl.DataFrame(rows, schema=VERDICT_SCHEMA)
