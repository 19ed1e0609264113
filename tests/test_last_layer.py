import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from shiftlab.chat import EncodedExample
from shiftlab.models import attach_lora
from shiftlab.spec import LoraSpec
from shiftlab.training import last_layer_at, pack, sft_loss
from shiftlab.training._losses import _predicting, sft_losses

VOCAB = 40


def _llama(attention: str, kv_heads: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
    )  # fmt: skip
    config._attn_implementation = attention
    model = LlamaForCausalLM(config)
    model = attach_lora(model, LoraSpec(r=4, alpha=8))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero, which would hide A's gradient
            torch.nn.init.normal_(param, std=0.1)
    return model


def _examples(n: int, seed: int = 0) -> list[EncodedExample]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(n):
        length = int(torch.randint(6, 14, (1,), generator=generator))
        prompt = int(torch.randint(2, length - 2, (1,), generator=generator))
        ids = torch.randint(3, VOCAB, (length,), generator=generator).tolist()
        labels = [-100] * prompt + ids[prompt:]
        examples.append(EncodedExample(input_ids=tuple(ids), labels=tuple(labels)))
    return examples


def _loss_and_grads(model, batch, whole: bool):
    model.zero_grad(set_to_none=True)
    if whole:
        layer = model.get_base_model().model.layers[-1]
        layer.forward = layer.forward  # an instance forward: last_layer_at leaves it whole
    try:
        loss, n = sft_loss(model, batch)
    finally:
        if whole:
            del layer.forward
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    return float(loss.detach()), n, grads


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("packing", ["bfd", "none"])
def test_loss_and_gradients_match_the_whole_layer(attention, packing):
    model = _llama(attention)
    batch = pack(_examples(9), 0, packing, 32)
    whole_loss, whole_n, whole = _loss_and_grads(model, batch, whole=True)
    kept_loss, kept_n, kept = _loss_and_grads(model, batch, whole=False)
    assert kept_n == whole_n > 0
    # The same sums in other matrix shapes: float32 rounding apart.
    assert kept_loss == pytest.approx(whole_loss, rel=1e-5)
    for name, grad in whole.items():
        scale = float(grad.abs().max())
        assert scale > 0, name
        assert float((kept[name] - grad).abs().max()) <= 1e-4 * scale, name


def test_hidden_states_come_back_at_the_selected_positions_in_row_order():
    model = _llama("sdpa").get_base_model()
    batch = pack(_examples(7, seed=3), 0, "bfd", 32)
    at = _predicting(batch)
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    with torch.no_grad():
        whole = model.model(**inputs, use_cache=False).last_hidden_state[at]
        with last_layer_at(model.model, at) as pruned:
            kept = model.model(**inputs, use_cache=False).last_hidden_state
    assert pruned
    assert kept.shape == whole.shape
    torch.testing.assert_close(kept, whole, rtol=1e-5, atol=1e-5)


def test_row_groups_get_their_own_positions():
    model = _llama("sdpa")
    batch = pack(_examples(12, seed=5), 0, "none", 32)
    groups = [slice(0, 5), slice(5, 12)]
    together = sft_losses(model, batch, groups)
    for group, (loss, n) in zip(groups, together, strict=True):
        alone = sft_loss(model, {k: v[group] for k, v in batch.items()})
        assert n == alone[1]
        assert float(loss.detach()) == pytest.approx(float(alone[0].detach()), rel=1e-5)


def test_the_layer_is_restored_after_the_block_even_on_error():
    model = _llama("sdpa").get_base_model()
    layer = model.model.layers[-1]
    at = torch.zeros(1, 8, dtype=torch.bool)
    at[0, 5] = True
    with pytest.raises(KeyError), last_layer_at(model.model, at) as pruned:
        assert pruned and "forward" in vars(layer)
        raise KeyError("boom")
    assert "forward" not in vars(layer)


def test_unsupported_models_and_masks_run_whole():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2))
    some = torch.zeros(2, 6, dtype=torch.bool)
    some[:, 3] = True
    with last_layer_at(gpt2.transformer, some) as pruned:
        assert not pruned
    llama = _llama("sdpa").get_base_model().model
    for at in (torch.zeros(2, 6, dtype=torch.bool), torch.ones(2, 6, dtype=torch.bool)):
        with last_layer_at(llama, at) as pruned:
            assert not pruned  # nothing to skip, or nothing to compute
    handle = llama.layers[-1].mlp.register_forward_hook(lambda *args: None)
    with last_layer_at(llama, some) as pruned:
        assert not pruned  # a hook inside the layer expects every position
    handle.remove()
    with pytest.raises(RuntimeError, match="cache"), last_layer_at(llama, some):
        llama(input_ids=torch.ones(2, 6, dtype=torch.long), use_cache=True)


def test_a_checkpointed_last_layer_runs_whole():
    from shiftlab.training._loop import _set_checkpointing

    model = _llama("sdpa")
    _set_checkpointing(model, True)
    model.train()
    at = torch.zeros(2, 6, dtype=torch.bool)
    at[:, 4] = True
    with last_layer_at(model.get_base_model().model, at) as pruned:
        assert not pruned  # transformers checkpoints in the class's forward


def test_stacked_arms_run_the_last_layer_at_their_targets(tmp_path, monkeypatch):
    from shiftlab import _last_layer
    from shiftlab.models import build_tiny_llama
    from shiftlab.spec import TrainingSpec
    from shiftlab.toyworld import build_tokenizer
    from shiftlab.training import ArmJob, encode_sft, train_arms

    tok = build_tokenizer()
    organism = attach_lora(build_tiny_llama(len(tok), seed=7), LoraSpec(r=4, alpha=8))
    organism.save_pretrained(tmp_path)
    chat = ([{"role": "user", "content": "hi ."}], "the sky is blue .")
    data = encode_sft(tok, [chat] * 4, 64)
    narrowed = []
    layer_at = _last_layer._layer_at
    monkeypatch.setattr(
        _last_layer, "_layer_at", lambda *args: narrowed.append(1) or layer_at(*args)
    )
    config = TrainingSpec(
        steps=2, batch_size=2, learning_rate=1e-2, warmup_steps=0, packing="bfd", max_length=64
    )
    seconds = []
    train_arms(
        build_tiny_llama(len(tok), seed=7), tok, tmp_path,
        [ArmJob("a", data, seed=1), ArmJob("b", data, seed=2)], config,
        on_done=lambda arm, model, log: seconds.append(log["seconds"].to_list()), progress=False,
    )  # fmt: skip
    assert seconds[0] == seconds[1]  # the two arms trained stacked, one step at a time
    assert len(narrowed) == 2  # and each stacked step narrowed the last layer
