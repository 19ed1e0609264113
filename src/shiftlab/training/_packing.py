"""Packing examples into rows: best-fit-decreasing bins, or one padding-free row.

Packed rows carry per-example ``position_ids`` that restart at 0 and no 2-D attention
mask: ``transformers`` then derives a block-diagonal causal mask from the position ids
(sdpa/eager) or runs variable-length kernels (flash attention), so no example attends to
another and packed training computes the same loss as padded training.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence

import torch

from shiftlab.chat import IGNORE_INDEX, EncodedExample, collate


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group item indices into bins of total length <= ``capacity``, longest items first.

    Each item goes into the fullest bin that still has room (best fit).

    >>> best_fit_decreasing([5, 3, 4, 2, 6], capacity=8)
    [[4, 3], [0, 1], [2]]
    """
    if any(n > capacity for n in lengths):
        raise ValueError(f"an item is longer than the bin capacity {capacity}")
    bins: list[list[int]] = []
    # (remaining room, bin index), kept sorted so the tightest fitting bin is found by bisect.
    rooms: list[tuple[int, int]] = []
    for item in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        size = lengths[item]
        at = bisect.bisect_left(rooms, (size, -1))
        if at == len(rooms):
            bins.append([item])
            bisect.insort(rooms, (capacity - size, len(bins) - 1))
        else:
            room, index = rooms.pop(at)
            bins[index].append(item)
            bisect.insort(rooms, (room - size, index))
    return bins


def pack_rows(rows: Sequence[Sequence[EncodedExample]], pad_id: int) -> dict[str, torch.Tensor]:
    """Concatenate each row's examples; position ids restart per example; pad rows at the end.

    Row padding gets positions that restart at 0 too, so it forms its own (ignored) segment.
    """
    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    # Built as Python lists and converted once: per-example tensor copies cost more than
    # the step's matrix products on small models.
    ids: list[list[int]] = []
    labels: list[list[int]] = []
    positions: list[list[int]] = []
    for row in rows:
        row_ids: list[int] = []
        row_labels: list[int] = []
        row_positions: list[int] = []
        for example in row:
            row_ids += example.input_ids
            # The first token of an example is never a target of the previous one.
            row_labels.append(IGNORE_INDEX)
            row_labels += example.labels[1:]
            row_positions += range(len(example.input_ids))
        pad = width - len(row_ids)
        ids.append(row_ids + [pad_id] * pad)
        labels.append(row_labels + [IGNORE_INDEX] * pad)
        positions.append(row_positions + list(range(pad)))
    as_tensor = functools.partial(torch.tensor, dtype=torch.long)
    return {
        "input_ids": as_tensor(ids),
        "labels": as_tensor(labels),
        "position_ids": as_tensor(positions),
    }


def pack_bins(
    examples: Sequence[EncodedExample],
    mode: str,
    capacity: int,
    sizes: Sequence[int] | None = None,
) -> list[list[EncodedExample]]:
    """The rows a micro-batch's examples go in (``none``: each its own)."""
    if mode == "none":
        return [[e] for e in examples]
    if mode == "padding_free":
        return [list(examples)]
    if mode == "bfd":
        lengths = [len(e.input_ids) for e in examples] if sizes is None else sizes
        return [[examples[i] for i in b] for b in best_fit_decreasing(lengths, capacity)]
    raise ValueError(f"unknown packing mode {mode!r}")


def pack(
    examples: Sequence[EncodedExample],
    pad_id: int,
    mode: str,
    capacity: int,
    sizes: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """Batch a micro-batch: ``none`` pads each example to its own row; ``bfd`` packs into
    rows of ``capacity`` tokens; ``padding_free`` concatenates everything into one row.

    ``sizes`` (default: each example's length) decide the bins, so two sides of paired
    examples packed with the same sizes land in the same rows in the same order.
    """
    if mode == "none":
        return collate(examples, pad_id)
    return pack_rows(pack_bins(examples, mode, capacity, sizes), pad_id)
