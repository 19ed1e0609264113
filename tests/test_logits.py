"""Logits at chosen positions equal the whole forward's, whichever way a model forms them."""

import pytest
import torch

from shiftlab._logits import full_logits, logits_at, split_head


def _granite():
    from transformers import GraniteConfig, GraniteForCausalLM

    config = GraniteConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           logits_scaling=4.0)  # fmt: skip
    return GraniteForCausalLM(config)


def _llama():
    from shiftlab.models import build_tiny_llama

    return build_tiny_llama(64)


@pytest.mark.parametrize(("build", "splits"), [(_llama, True), (_granite, False)])
def test_logits_at_equal_the_whole_forwards(build, splits):
    """Granite divides its logits by ``logits_scaling`` in its own forward: its head is not
    split off, so its logits at the positions are still the model's."""
    torch.manual_seed(0)
    model = build().eval()
    batch = {
        "input_ids": torch.randint(0, 64, (2, 7)),
        "attention_mask": torch.ones(2, 7, dtype=torch.long),
    }
    at = torch.zeros(2, 7, dtype=torch.bool)
    at[0, 2], at[0, 5], at[1, 6] = True, True, True
    with torch.no_grad():
        ours, whole = logits_at(model, batch, at), full_logits(model, batch)[at]
    assert (split_head(model) is not None) == splits
    assert torch.allclose(ours, whole, atol=1e-5)
