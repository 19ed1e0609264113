"""The last decoder layer run only where a loss or a score reads it.

A loss or a teacher-forced score that reads the final hidden states at a few positions
(the targets of SFT, the suffix of BCT, a scored continuation) needs the last layer's
keys and values at every position, but its query, attention output, output projection
and MLP only at those positions: nothing after the last layer mixes positions. Where the
targets are a third of a packed row, as in toyworld's chats, that is most of the last
layer's work, and on a two-layer model a sixth of a LoRA step (a thirtieth of the
layers, on SmolLM2, saves little).
:func:`last_layer_at` runs the last layer so for the decoder layers whose arithmetic it
reproduces (``transformers``' causal Llama layer, which SmolLM2 and toyworld use, with sdpa
or eager attention); any other layer runs whole, as does one that is checkpointed or
watched by a hook (see :func:`_prunable`).

The kept positions compute the same sums as the whole layer, in other matrix shapes: the
results agree to float rounding, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import torch

_ENABLED: ContextVar[bool] = ContextVar("shiftlab_last_layer_at", default=True)
_ROW_WISE = "_shiftlab_row_wise"
F = TypeVar("F", bound=Callable[..., Any])


def row_wise(forward: F) -> F:
    """Mark a forward that replaces a module's own (as the stacked arms' LoRA layers do) as
    one that treats every batch row on its own: :func:`last_layer_at` may then feed it
    the rows of the selected positions."""
    setattr(forward, _ROW_WISE, True)
    return forward


def _replaced(module: torch.nn.Module) -> bool:
    """Whether ``module``'s forward is replaced by one not marked :func:`row_wise`."""
    forward = vars(module).get("forward")
    return forward is not None and not getattr(forward, _ROW_WISE, False)


@contextmanager
def whole_last_layer() -> Iterator[None]:
    """Within the block, :func:`last_layer_at` never narrows the last layer (the toyworld
    base recipe trains so, as its shipped weights were trained).

    >>> with whole_last_layer(), last_layer_at(None, torch.ones(1, 2, dtype=torch.bool)) as p:
    ...     p
    False
    """
    token = _ENABLED.set(False)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def _prunable(decoder: Any) -> Any | None:
    """The decoder's last layer when :func:`last_layer_at` can run it on selected positions."""
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaDecoderLayer

    layers = getattr(decoder, "layers", None)
    config = getattr(decoder, "config", None)
    if not isinstance(layers, torch.nn.ModuleList) or config is None:
        return None
    n_layers = getattr(config, "num_hidden_layers", None)
    if not n_layers or len(layers) < n_layers:
        return None
    layer = layers[n_layers - 1]
    # A hook or a replaced forward (accelerate's offloading, a user's probe, transformers'
    # output capture) in the layer, the final norm or the decoder itself would see other
    # positions than it was written for.
    norm = getattr(decoder, "norm", None)
    watched = [decoder, *layer.modules(), *(norm.modules() if norm is not None else ())]
    wrapped = any(_replaced(m) or m._forward_hooks or m._forward_pre_hooks for m in watched)
    supported = (
        type(layer) is LlamaDecoderLayer
        and type(layer.self_attn) is LlamaAttention
        and layer.self_attn.is_causal
        and getattr(config, "is_causal", True) is not False
        and not wrapped
        # transformers checkpoints the layer in its class's forward, which this replaces.
        and not (layer.gradient_checkpointing and layer.training)
        and getattr(config, "_attn_implementation", None) in ("sdpa", "eager")
    )
    return layer if supported else None


@contextmanager
def last_layer_at(decoder: Any, at: torch.Tensor) -> Iterator[bool]:
    """Within the block, ``decoder``'s forward returns its final hidden states at the
    positions ``at`` (a ``(batch, length)`` boolean mask) only, shape ``(n, hidden)`` in
    the order of ``hidden[at]``; yields whether it does (False: the decoder is unchanged
    and returns every position). A forward with a key-value cache (generation) raises:
    the block is for passes that read only the selected positions.

    >>> from shiftlab.models import build_tiny_llama
    >>> model = build_tiny_llama(64)
    >>> ids = torch.arange(12).reshape(2, 6)
    >>> at = ids % 4 == 3
    >>> whole = model.model(input_ids=ids, use_cache=False).last_hidden_state[at]
    >>> with last_layer_at(model.model, at) as pruned:
    ...     kept = model.model(input_ids=ids, use_cache=False).last_hidden_state
    >>> pruned, kept.shape == whole.shape, torch.allclose(kept, whole, atol=1e-5)
    (True, True, True)
    """
    layer = _prunable(decoder) if _ENABLED.get() else None
    # Read from the device only for a layer that can be narrowed.
    width = int(at.sum(1).max()) if layer is not None and at.numel() else 0
    if layer is None or width in (0, at.shape[1]):
        yield False
        return

    def forward(
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Any = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        # transformers 4 names the cache past_key_value(s).
        caches = (cache, kwargs.get("past_key_values"), kwargs.get("past_key_value"))
        if any(c is not None for c in caches) or position_embeddings is None:
            raise RuntimeError("the last layer runs on selected positions only without a cache")
        return _layer_at(layer, at, width, hidden_states, attention_mask, position_embeddings)

    layer.forward = forward
    try:
        yield True
    finally:
        del layer.forward


def _layer_at(
    layer: Any,
    at: torch.Tensor,
    width: int,
    hidden: torch.Tensor,
    mask: torch.Tensor | None,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """``LlamaDecoderLayer.forward`` with queries at ``at`` only (``width`` per row at most)."""
    from transformers.models.llama.modeling_llama import (
        ALL_ATTENTION_FUNCTIONS,
        eager_attention_forward,
        rotate_half,
    )

    attn = layer.self_attn
    batch, length, _ = hidden.shape
    at = at.to(hidden.device)
    # Each row's kept positions in order, then (to fill the row to ``width``) its first
    # kept position again: a slot that attends where a real query does, dropped at the end.
    order = torch.argsort((~at).to(torch.int8), dim=1, stable=True)[:, :width]
    valid = torch.arange(width, device=at.device) < at.sum(1, keepdim=True)
    index = torch.where(valid, order, order[:, :1])
    rows = torch.arange(batch, device=at.device)[:, None]

    normed = layer.input_layernorm(hidden)
    keys_shape = (batch, length, -1, attn.head_dim)
    query = attn.q_proj(normed[rows, index]).view(batch, width, -1, attn.head_dim).transpose(1, 2)
    key = attn.k_proj(normed).view(keys_shape).transpose(1, 2)
    value = attn.v_proj(normed).view(keys_shape).transpose(1, 2)
    cos, sin = (t.expand(batch, -1, -1).unsqueeze(1) for t in position_embeddings)
    cos_q, sin_q = cos[rows, :, index].transpose(1, 2), sin[rows, :, index].transpose(1, 2)
    # The rotation ``apply_rotary_pos_emb`` applies, term for term.
    query = (query * cos_q) + (rotate_half(query) * sin_q)
    key = (key * cos) + (rotate_half(key) * sin)

    implementation = attn.config._attn_implementation
    if mask is None:  # causal without padding: the model passed no mask
        allowed = index[:, None, :, None] >= torch.arange(length, device=at.device)
        mask = allowed
        if implementation == "eager":
            mask = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device)
            mask = mask.masked_fill(~allowed, torch.finfo(query.dtype).min)
    else:
        mask = mask.expand(batch, -1, -1, -1)[rows, :, index].transpose(1, 2)
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
    attended, _ = interface(
        attn, query, key, value, mask,
        dropout=attn.attention_dropout if attn.training else 0.0, scaling=attn.scaling,
    )  # fmt: skip
    out = hidden[rows, index] + attn.o_proj(attended.reshape(batch, width, -1).contiguous())
    out = out + layer.mlp(layer.post_attention_layernorm(out))
    return out[valid]
