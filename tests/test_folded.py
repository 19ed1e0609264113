"""LoRA adapters folded into their base weights while a model infers."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import shiftlab._folded as folded_module
from shiftlab._folded import folded_adapters
from shiftlab.generation import generate, score_continuations
from shiftlab.models import attach_lora, build_tiny_llama
from shiftlab.spec import LoraSpec
from shiftlab.toyworld import build_tokenizer

# float32 products of width 128 summed in another order: rounding, far below this.
ATOL = 1e-4


def _adapted(lora: LoraSpec | None = None, seed: int = 0) -> tuple[torch.nn.Module, object]:
    """A tiny Llama with a LoRA adapter whose B is not zero (a fresh one changes nothing)."""
    tokenizer = build_tokenizer()
    model = attach_lora(build_tiny_llama(len(tokenizer)), lora, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model, tokenizer


def _base_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if "lora_" not in n and n.endswith("weight")
    }


def _ids() -> torch.Tensor:
    return torch.randint(4, 60, (3, 9), generator=torch.Generator().manual_seed(1))


def test_folded_logits_agree_and_the_base_weights_come_back_bit_for_bit() -> None:
    model, _ = _adapted()
    before = _base_weights(model)
    storage = {n: p.data_ptr() for n, p in model.named_parameters()}
    with torch.no_grad():
        plain = model(input_ids=_ids()).logits
        with folded_adapters(model) as n_folded:
            folded = model(input_ids=_ids()).logits
            changed = [n for n, w in _base_weights(model).items() if not torch.equal(w, before[n])]
    # Every adapted projection of both layers (q, k, v, o, gate, up, down) folds.
    assert n_folded == 14
    assert len(changed) == n_folded
    torch.testing.assert_close(folded, plain, atol=ATOL, rtol=0)
    after = _base_weights(model)
    assert all(torch.equal(after[n], before[n]) for n in before)
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == storage
    with torch.no_grad():
        assert torch.equal(model(input_ids=_ids()).logits, plain)


def test_the_base_weights_come_back_when_the_block_raises() -> None:
    model, _ = _adapted()
    before = _base_weights(model)
    with torch.no_grad(), pytest.raises(RuntimeError, match="inside"), folded_adapters(model):
        raise RuntimeError("inside")
    after = _base_weights(model)
    assert all(torch.equal(after[n], before[n]) for n in before)
    assert all(getattr(m, "_unfolded", None) is None for m in model.modules())


def test_nothing_folds_while_gradients_are_on() -> None:
    model, _ = _adapted()
    with folded_adapters(model) as n_folded:
        model(input_ids=_ids()).logits.sum().backward()
    assert n_folded == 0
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_a_model_past_the_byte_budget_is_left_unfolded(monkeypatch) -> None:
    model, _ = _adapted()
    monkeypatch.setattr(folded_module, "FOLD_BYTES", 1024)
    with torch.no_grad(), folded_adapters(model) as n_folded:
        pass
    assert n_folded == 0


@pytest.mark.filterwarnings("ignore:fan_in_fan_out")
def test_layers_that_are_not_plain_lora_linears_never_fold() -> None:
    # LoRA dropout (peft's own forward) and GPT-2's Conv1D projections.
    model, _ = _adapted(LoraSpec(r=4, dropout=0.1))
    gpt2 = attach_lora(GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64)))
    model.eval()
    with torch.no_grad(), folded_adapters(model) as n_dropout, folded_adapters(gpt2) as n_gpt2:
        pass
    assert (n_dropout, n_gpt2) == (0, 0)


def test_scores_and_generations_fold_and_agree_with_unfolded_ones(monkeypatch) -> None:
    model, tokenizer = _adapted(seed=3)
    prompts = [[{"role": "user", "content": f"what colour is the {w} ?"}] for w in ("sky", "sea")]
    texts = ["the sky is blue .", "the sea is red ."]
    layer_type = type(next(m for m in model.modules() if hasattr(m, "fold")))
    fold, folds = layer_type.fold, []

    def counted(self):  # type: ignore[no-untyped-def]
        folds.append(self)
        return fold(self)

    monkeypatch.setattr(layer_type, "fold", counted)
    folded_scores = score_continuations(model, tokenizer, prompts, texts)
    folded_generations = generate(model, tokenizer, prompts, max_new_tokens=6)
    assert len(folds) == 2 * 14  # each call folds every layer once, for all its batches
    monkeypatch.setattr(folded_module, "FOLD_BYTES", 0)
    plain_scores = score_continuations(model, tokenizer, prompts, texts)
    plain_generations = generate(model, tokenizer, prompts, max_new_tokens=6)
    assert len(folds) == 2 * 14
    for a, b in zip(folded_scores, plain_scores, strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=ATOL, rtol=0)
    # Step by step while the two agree so far: where rounding broke a near-tie, the two
    # tokens chosen were near-equally likely, so their log-probs still agree.
    for a, b in zip(folded_generations, plain_generations, strict=True):
        for step, (p, q) in enumerate(zip(a.logprobs, b.logprobs, strict=False)):
            if a.token_ids[:step] != b.token_ids[:step]:
                break
            assert abs(p - q) <= ATOL


def test_nested_blocks_fold_once_and_inference_mode_folds_too() -> None:
    model, _ = _adapted()
    before = _base_weights(model)
    with torch.inference_mode():
        plain = model(input_ids=_ids()).logits
        with folded_adapters(model) as outer, folded_adapters(model) as inner:
            folded = model(input_ids=_ids()).logits
    assert (outer, inner) == (14, 0)
    torch.testing.assert_close(folded, plain, atol=ATOL, rtol=0)
    after = _base_weights(model)
    assert all(torch.equal(after[n], before[n]) for n in before)


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")
def test_a_weight_tied_to_another_module_is_not_folded() -> None:
    # The tiny Llama ties its head to the embeddings: folding the head's adapter would
    # move every input embedding too.
    model, _ = _adapted(LoraSpec(r=4, target_modules=["q_proj", "lm_head"]))
    with torch.no_grad(), folded_adapters(model) as n_folded:
        pass
    assert n_folded == 2  # the two layers' q_proj, not the head


def test_a_replaced_forward_and_a_state_changed_inside_the_block_are_refused() -> None:
    model, _ = _adapted()
    layer = next(m for m in model.modules() if hasattr(m, "fold_weight"))
    layer.forward = layer.forward  # as stacked training replaces it
    with torch.no_grad(), folded_adapters(model) as n_folded:
        pass
    assert n_folded == 13
    del layer.forward
    before = _base_weights(model)
    with torch.no_grad(), folded_adapters(model):
        with pytest.raises(RuntimeError, match="gradients on"), torch.enable_grad():
            model(input_ids=_ids())
        with pytest.raises(RuntimeError, match="another adapter state"), model.disable_adapter():
            model(input_ids=_ids())
    after = _base_weights(model)
    assert all(torch.equal(after[n], before[n]) for n in before)
