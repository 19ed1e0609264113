"""Tiny Llama-architecture models built from a config, for tests and toyworld."""

from __future__ import annotations

from typing import Any

import torch

TINY_SIZES: dict[str, dict[str, int]] = {
    "small": {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    },
    "medium": {
        "hidden_size": 192,
        "intermediate_size": 384,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
    },
    "large": {
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
    },
}


def build_tiny_llama(
    vocab_size: int, size: str = "small", *, seed: int = 0, max_positions: int = 128
) -> Any:
    """A freshly initialised ``LlamaForCausalLM`` of one of :data:`TINY_SIZES`.

    >>> model = build_tiny_llama(64, "small")
    >>> sum(p.numel() for p in model.parameters()) > 300_000
    True
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if size not in TINY_SIZES:
        raise ValueError(f"unknown tiny model size {size!r}; expected one of {list(TINY_SIZES)}")
    dims: dict[str, Any] = dict(TINY_SIZES[size])
    config = LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max_positions,
        num_key_value_heads=dims["num_attention_heads"],
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        **dims,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model
