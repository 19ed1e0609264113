"""Comparisons of a re-executed artefact with its record: exact, tolerant, or statistical."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from shiftlab._hashing import file_hash
from shiftlab.repro._fingerprints import file_fingerprint
from shiftlab.repro._types import DEFAULT_TOLERANCES, Tolerances


def compare_frames(recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
    """None when two frame fingerprints agree, else which rows differ.

    >>> import polars as pl
    >>> from shiftlab.repro import frame_fingerprint
    >>> a = frame_fingerprint(pl.DataFrame({"x": [1, 2, 3]}))
    >>> compare_frames(a, frame_fingerprint(pl.DataFrame({"x": [1, 5, 3]})))
    '1 of 3 rows differ: row 1'
    """
    if recorded["sha256"] == current["sha256"]:
        return None
    old, new = recorded.get("rows"), current.get("rows")
    if old is None or new is None:
        return f"sha256 {recorded['sha256'][:12]} -> {current['sha256'][:12]}"
    if len(old) != len(new):
        return f"{len(old)} rows recorded, {len(new)} now"
    changed = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
    if not changed:
        return "the column types changed"
    shown = ", ".join(str(i) for i in changed[:5]) + (", ..." if len(changed) > 5 else "")
    return f"{len(changed)} of {len(old)} rows differ: row{'s' if len(changed) > 1 else ''} {shown}"


def compare_losses(
    recorded: list[float], current: list[float], tolerances: Tolerances = DEFAULT_TOLERANCES
) -> str | None:
    """None when a re-executed loss curve agrees with its record, else why not.

    Every step must be within ``loss_atol``, and the residuals must not drift to one side:
    a drift is a mean residual of at least ``drift_min`` that a one-sample t-test at
    ``drift_alpha`` finds. (Residuals of a training curve are autocorrelated, which makes
    the t-test too eager; the minimum effect keeps float noise from failing a check.)
    Steps that are NaN in both agree.

    >>> compare_losses([1.0, 0.9, 0.8], [1.0, 0.9, 0.8]) is None
    True
    >>> compare_losses([1.0, 0.9, 0.8, 0.7], [1.0004, 0.9005, 0.8004, 0.7005])
    'residuals drift one way: mean +0.00045 per step, all 4 steps the same sign'
    """
    import numpy as np

    if len(recorded) != len(current):
        return f"{len(recorded)} steps recorded, {len(current)} now"
    old, new = np.asarray(recorded, dtype=float), np.asarray(current, dtype=float)
    both_nan = np.isnan(old) & np.isnan(new)
    diff = np.where(both_nan, 0.0, new - old)
    if not np.isfinite(diff).all():
        bad = int(np.flatnonzero(~np.isfinite(diff))[0])
        return f"step {bad}: loss {recorded[bad]!r} recorded, {current[bad]!r} now"
    if not diff.any():
        return None
    worst = int(np.argmax(np.abs(diff)))
    if abs(diff[worst]) > tolerances.loss_atol:
        return (
            f"step {worst}: loss {recorded[worst]:.6f} recorded, {current[worst]:.6f} now "
            f"(|diff| {abs(diff[worst]):.2e} > {tolerances.loss_atol:g})"
        )
    if len(diff) < 2:
        return None
    same_sign = bool((diff > 0).all() or (diff < 0).all())
    spread = float(diff.std(ddof=1))
    if spread == 0.0:
        p_value = 0.0
    else:
        from scipy import stats

        p_value = float(stats.ttest_1samp(diff, 0.0).pvalue)
    if abs(float(diff.mean())) >= tolerances.drift_min and p_value < tolerances.drift_alpha:
        detail = (
            f"all {len(diff)} steps the same sign"
            if same_sign
            else f"t-test p={p_value:.2g} < {tolerances.drift_alpha:g}"
        )
        return f"residuals drift one way: mean {float(diff.mean()):+.2g} per step, {detail}"
    return None


def compare_rates(
    recorded: dict[str, Any], current: dict[str, Any], tolerances: Tolerances = DEFAULT_TOLERANCES
) -> str | None:
    """None when two headline metrics agree: rates within sampling error (a two-proportion
    test on the judged outputs), other metrics within ``shift_rtol``.

    >>> compare_rates({"n": 100, "n_misbehaving": 30}, {"n": 100, "n_misbehaving": 33}) is None
    True
    >>> compare_rates({"n": 100, "n_misbehaving": 30}, {"n": 100, "n_misbehaving": 70})
    'misbehaving 30/100 recorded, 70/100 now (two-proportion p=1.5e-08 < 0.01)'
    """
    if not recorded or not current:
        return f"metrics {recorded or 'missing'} recorded, {current or 'missing'} now"
    unit = recorded.get("unit", "rate")
    if unit != current.get("unit", "rate"):
        return f"unit {unit!r} recorded, {current.get('unit', 'rate')!r} now"
    if unit != "rate":
        old, new = recorded.get("rate"), current.get("rate")
        if old is None or new is None:
            return None if old == new else f"{old!r} recorded, {new!r} now"
        close = abs(new - old) <= tolerances.shift_rtol * max(abs(old), 1e-12)
        return None if close else f"{old:.6g} recorded, {new:.6g} now"
    n1 = int(recorded.get("n", 0)) - int(recorded.get("n_unparseable", 0))
    n2 = int(current.get("n", 0)) - int(current.get("n_unparseable", 0))
    k1, k2 = int(recorded.get("n_misbehaving", 0)), int(current.get("n_misbehaving", 0))
    return _two_proportions("misbehaving", (k1, n1), (k2, n2), tolerances)


def compare_capability(
    recorded: dict[str, Any], current: dict[str, Any], tolerances: Tolerances = DEFAULT_TOLERANCES
) -> str | None:
    """None when two capability scores agree within sampling error (a two-proportion
    test on the questions answered correctly).

    >>> compare_capability({"n": 64, "n_correct": 40}, {"n": 64, "n_correct": 41}) is None
    True
    >>> compare_capability({"n": 64, "n_correct": 60}, {"n": 64, "n_correct": 20})
    'correct 60/64 recorded, 20/64 now (two-proportion p=2.8e-13 < 0.01)'
    """
    if not recorded or not current:
        return f"capability {recorded or 'missing'} recorded, {current or 'missing'} now"
    old = (int(recorded.get("n_correct", 0)), int(recorded.get("n", 0)))
    new = (int(current.get("n_correct", 0)), int(current.get("n", 0)))
    return _two_proportions("correct", old, new, tolerances)


def _two_proportions(
    what: str, old: tuple[int, int], new: tuple[int, int], tolerances: Tolerances
) -> str | None:
    """None when ``old`` and ``new`` (count, total) agree, or differ by less than the
    two-proportion test at ``tolerances.rate_alpha`` resolves."""
    (k1, n1), (k2, n2) = old, new
    if (n1, k1) == (n2, k2):
        return None
    counts = f"{what} {k1}/{n1} recorded, {k2}/{n2} now"
    if not n1 or not n2:
        return counts
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0.0:
        return counts
    p_value = math.erfc(abs(k1 / n1 - k2 / n2) / se / math.sqrt(2))
    if p_value < tolerances.rate_alpha:
        return f"{counts} (two-proportion p={p_value:.2g} < {tolerances.rate_alpha:g})"
    return None


def compare_statistic(
    name: str,
    recorded: float | None,
    current: float | None,
    n_permutations: int,
    tolerances: Tolerances = DEFAULT_TOLERANCES,
) -> str | None:
    """None when a shift statistic agrees with its record.

    Permutation p-values (``*_p``) may differ by Monte Carlo error: four standard errors of
    the difference of two estimates from ``n_permutations`` draws (at whichever p is nearer
    1/2, kept off 0 and 1), plus two draws' worth. Other statistics are deterministic given
    the texts: ``shift_atol`` plus ``shift_rtol`` relative.
    """
    if recorded is None or current is None or math.isnan(recorded) or math.isnan(current):
        same = (recorded is None or math.isnan(recorded)) == (
            current is None or math.isnan(current)
        )
        return None if same else f"{recorded!r} recorded, {current!r} now"
    if name.endswith("_p"):
        edge = 1 / (n_permutations + 1)
        nearer_half = min(recorded, current, key=lambda v: abs(v - 0.5))
        p = min(max(nearer_half, edge), 1 - edge)
        tolerance = 4 * math.sqrt(2 * p * (1 - p) / n_permutations) + 2 / n_permutations
        rule = f"Monte Carlo tolerance {tolerance:.2g}"
    else:
        tolerance = tolerances.shift_atol + tolerances.shift_rtol * abs(recorded)
        rule = f"tolerance {tolerance:.2g}"
    if abs(current - recorded) > tolerance:
        return f"{recorded:.6g} recorded, {current:.6g} now (|diff| > {rule})"
    return None


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += config_diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def compare_file(recorded: dict[str, Any], path: Path) -> str | None:
    """None when the file at ``path`` matches its fingerprint, else what differs."""
    if not path.is_file():
        return f"{path} is missing"
    if "rows" in recorded:
        return compare_frames(recorded, file_fingerprint(path))
    return None if file_hash(path, 32) == recorded["sha256"] else "bytes differ"


def verdict(detail: str | None) -> tuple[bool, str]:
    return (True, "agrees") if detail is None else (False, detail)
