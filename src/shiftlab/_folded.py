"""LoRA adapters folded into their base weights while a model only infers.

Generation and teacher-forced scoring run the organism or a trained arm without gradients,
over and over (every pool, eval, sample and shift score). Unfolded, every adapted linear
layer runs three more small products and an addition on each call; on a toyworld model,
where a call is mostly per-operation overhead, that is a quarter of the time of sampling
an eval split. Folded, each layer runs one product with ``W + B (s A)``, which agrees
with ``W x + B (s A x)`` to float rounding (the products are summed in another order).

A layer folds when its class offers it (``fold_bytes`` and ``fold``, as
:func:`shiftlab.models.low_rank_scaled_linear`'s does for a plain single-adapter LoRA
layer); the folded weights are new tensors and the base's own are put back untouched
when the block ends, whatever happens inside it. A model whose folded weights would pass
:data:`FOLD_BYTES` is left unfolded: on SmolLM2-135M the copies would be 430 MB for a few
per cent of a call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

# The most bytes of folded weight copies a model may hold at once.
FOLD_BYTES = 64 * 2**20


@contextmanager
def folded_adapters(model: Any) -> Iterator[int]:
    """Within the block (when gradients are off), ``model``'s foldable LoRA layers run with
    their adapters folded into their weights; yields how many layers folded. With
    gradients on, nothing folds (the adapter's own parameters must see them).

    >>> from shiftlab.models import attach_lora, build_tiny_llama
    >>> model = attach_lora(build_tiny_llama(64))
    >>> ids = torch.tensor([[1, 2, 3]])
    >>> with torch.no_grad():
    ...     plain = model(input_ids=ids).logits
    ...     with folded_adapters(model) as n:
    ...         folded = model(input_ids=ids).logits
    >>> n > 0, torch.allclose(plain, folded, atol=1e-5)
    (True, True)
    """
    layers: list[Any] = []
    if not torch.is_grad_enabled():
        sizes = [(m, m.fold_bytes()) for m in model.modules() if hasattr(m, "fold_bytes")]
        if sum(size for _, size in sizes) <= FOLD_BYTES:
            layers = [m for m, size in sizes if size]
    restores: list[Callable[[], None]] = []
    try:
        for layer in layers:
            restores.append(layer.fold())
        yield len(restores)
    finally:
        for restore in reversed(restores):
            restore()
