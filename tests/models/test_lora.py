"""LoRA layers that scale the rank-r activations give peft's numbers bit for bit."""

from __future__ import annotations

import pytest
import torch

from shiftlab.models import (
    attach_lora,
    build_tiny_llama,
    exact_scaling,
    load_lora,
    low_rank_scaled_linear,
)
from shiftlab.spec import LoraSpec


def test_exact_scalings_are_the_powers_of_two_from_one():
    assert [exact_scaling(s) for s in (1.0, 2.0, 8.0, 1024.0)] == [True] * 4
    assert [exact_scaling(s) for s in (0.5, 1.5, 3.0, 2.0001, 0.0)] == [False] * 5


def _peft_classes(model):
    """Every LoRA layer back to peft's own ``Linear`` (its forward scales the output)."""
    from peft.tuners.lora import Linear

    for module in model.modules():
        if type(module) is low_rank_scaled_linear():
            module.__class__ = Linear
    return model


def _train(model, steps=4, seed=0):
    """A few AdamW steps on fixed random tokens; the trained adapter and every loss."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (4, 12), generator=generator)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        losses.append(loss.detach())
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return weights, torch.stack(losses)


@pytest.mark.parametrize("r, alpha", [(8, 16), (4, 4), (8, 12)])
def test_training_matches_peft_bit_for_bit(r, alpha):
    """A power-of-two scaling commutes with every rounding of the rank-r product, so
    moving it there changes no bit of the forward, the gradients or the trained adapter;
    a scaling that is not one (1.5) runs peft's own forward."""
    spec = LoraSpec(r=r, alpha=alpha)
    ours = attach_lora(build_tiny_llama(64), spec, seed=3)
    theirs = _peft_classes(attach_lora(build_tiny_llama(64), spec, seed=3))
    assert any(type(m) is low_rank_scaled_linear() for m in ours.modules())
    assert not any(type(m) is low_rank_scaled_linear() for m in theirs.modules())
    # B starts at zero; a nonzero B makes the scaled path carry signal from the first step.
    for model in (ours, theirs):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.linspace(-0.05, 0.05, p.numel()).view_as(p))
    ours_weights, ours_losses = _train(ours)
    theirs_weights, theirs_losses = _train(theirs)
    assert torch.equal(ours_losses, theirs_losses)
    assert ours_weights.keys() == theirs_weights.keys()
    for name, weight in ours_weights.items():
        assert torch.equal(weight, theirs_weights[name]), name
    assert not torch.equal(ours_losses[0], ours_losses[-1])  # it did train


def test_a_saved_adapter_loads_into_the_scaled_layers_unchanged(tmp_path):
    model = attach_lora(build_tiny_llama(64), seed=1)
    model.save_pretrained(tmp_path)
    ids = torch.arange(10)[None]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
        model.save_pretrained(tmp_path)
        expected = _peft_classes(model)(input_ids=ids).logits
        loaded = load_lora(build_tiny_llama(64), str(tmp_path))
        assert any(type(m) is low_rank_scaled_linear() for m in loaded.modules())
        # build_tiny_llama is seeded, so the base weights are the same as the saved model's.
        assert torch.equal(loaded(input_ids=ids).logits, expected)
