"""LoRA adapters folded into their base weights while a model only infers.

Generation and teacher-forced scoring run the organism or a trained arm without gradients,
over and over (every pool, eval, sample and shift score). Unfolded, every adapted linear
layer runs three more small products and an addition on each call; on a toyworld model,
where a call is mostly per-operation overhead, that was 22-33% of the time of sampling an
eval split (128 samples of 12 tokens, measured twice). Folded, each layer runs one
product with ``W + B (s A)``, which agrees with ``W x + B (s A x)`` to float rounding (the
products are summed in another order).

A layer folds when its class offers it (``fold_weight``, ``fold`` and ``unfold``, as
:func:`shiftlab.models.low_rank_scaled_linear`'s does for a plain single-adapter LoRA
layer) and its base weight is its own (a weight tied to another module, such as an
adapted output head tied to the embeddings, stays as it is). The folded weights are new
tensors, and the base's own are put back untouched when the block ends, whatever happens
inside it. A model whose folded weights would pass :data:`FOLD_BYTES` is left unfolded:
on SmolLM2-135M the copies would be 430 MB for a few per cent of a call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

# The most bytes of folded weight copies a model may hold at once.
FOLD_BYTES = 64 * 2**20


@contextmanager
def folded_adapters(model: Any) -> Iterator[int]:
    """Within the block (when gradients are off), ``model``'s foldable LoRA layers run with
    their adapters folded into their weights; yields how many layers folded. With
    gradients on, or inside another such block, nothing more folds.

    >>> from shiftlab.models import attach_lora, build_tiny_llama
    >>> model = attach_lora(build_tiny_llama(64))
    >>> _ = torch.manual_seed(0)
    >>> with torch.no_grad():  # a fresh adapter's B is zero: give it something to add
    ...     for name, parameter in model.named_parameters():
    ...         if "lora_B" in name:
    ...             _ = parameter.normal_(0, 0.2)
    ...     ids = torch.tensor([[1, 2, 3]])
    ...     plain = model(input_ids=ids).logits
    ...     with folded_adapters(model) as n:
    ...         folded = model(input_ids=ids).logits
    >>> n, torch.allclose(plain, folded, atol=1e-4)
    (14, True)
    """
    layers: list[Any] = []
    if not torch.is_grad_enabled():
        uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
        weights = [(m, m.fold_weight()) for m in model.modules() if hasattr(m, "fold_weight")]
        own = [(m, w) for m, w in weights if w is not None and uses[id(w)] == 1]
        if sum(w.nelement() * w.element_size() for _, w in own) <= FOLD_BYTES:
            layers = [m for m, _ in own]
    tried: list[Any] = []
    try:
        for layer in layers:
            tried.append(layer)  # before folding: an interrupted fold is unfolded too
            layer.fold()
        yield len(tried)
    finally:
        errors = []
        for layer in reversed(tried):
            try:
                layer.unfold()
            except RuntimeError as error:  # every layer is put back before one is reported
                errors.append(error)
        if errors:
            raise errors[0]
