"""A causal LM's logits at chosen positions, with the decoder and its output head apart.

Training's losses and teacher-forced scoring read logits at a few positions of each row
(the targets, a continuation, the last prompt token): :func:`logits_at` projects only
those positions' final hidden states through the head, and runs the last decoder layer
only there where it can (:func:`~shiftlab._last_layer.last_layer_at`), so neither the
``(batch, length, vocab)`` logits nor the last layer's other positions are computed.
"""

from __future__ import annotations

from typing import Any

import torch

from shiftlab._last_layer import last_layer_at


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of ``batch`` a causal LM's forward takes."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}


def full_logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's logits at every position, ``(batch, length, vocab)``."""
    logits: torch.Tensor = model(**model_inputs(batch), use_cache=False).logits
    return logits


def unwrap(model: Any) -> Any:
    """The ``transformers`` model inside DDP and peft wrappers."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


# Model types whose logits are the output head applied to the decoder's final hidden states
# and nothing else. Others scale or cap them in their own forward (Granite divides by
# ``logits_scaling``, Cohere multiplies by ``logit_scale``, Gemma 2 caps them, Falcon-H1
# multiplies by ``lm_head_multiplier``): their logits come from the whole forward.
PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt2"})


def split_head(model: Any) -> tuple[Any, Any] | None:
    """(decoder, output head) when logits are a plain projection of the decoder's output
    (a model type in :data:`PLAIN_HEAD_MODEL_TYPES`); None otherwise."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return None  # DDP syncs gradients only through its own forward
    base = unwrap(model)
    if getattr(base.config, "model_type", None) not in PLAIN_HEAD_MODEL_TYPES:
        return None
    head = base.get_output_embeddings()
    return None if head is None else (base.get_decoder(), head)


def hidden_at(decoder: Any, batch: dict[str, torch.Tensor], at: torch.Tensor) -> torch.Tensor:
    """The decoder's final hidden states at the positions ``at``, ``(n, hidden)``; its last
    layer runs only there where it can (see :func:`last_layer_at`)."""
    with last_layer_at(decoder, at) as pruned:
        hidden: torch.Tensor = decoder(**model_inputs(batch), use_cache=False)[0]
    return hidden if pruned else hidden[at]


def logits_at(model: Any, batch: dict[str, torch.Tensor], at: torch.Tensor) -> torch.Tensor:
    """Logits at the positions ``at`` (a ``(batch, length)`` boolean mask), shape
    ``(n, vocab)`` in the order of ``logits[at]``.

    >>> from shiftlab.models import build_tiny_llama
    >>> model = build_tiny_llama(64)
    >>> batch = {"input_ids": torch.arange(12).reshape(2, 6)}
    >>> at = batch["input_ids"] % 5 == 0
    >>> torch.allclose(logits_at(model, batch, at), full_logits(model, batch)[at], atol=1e-5)
    True
    """
    parts = split_head(model)
    if parts is None:
        return full_logits(model, batch)[at]
    decoder, head = parts
    logits: torch.Tensor = head(hidden_at(decoder, batch, at))
    return logits
