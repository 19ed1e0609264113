"""How many arms stack: a budget of tokens, cut by the model's activation memory."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from shiftlab.models import attach_lora, build_tiny_llama
from shiftlab.spec import LoraSpec, ToyworldSpec, TrainingSpec
from shiftlab.toyworld import build_tokenizer, build_toyworld_suite
from shiftlab.training import (
    STACK_BYTES,
    STACK_TOKENS,
    ArmJob,
    _arms,
    activation_bytes_per_token,
    encode_sft,
    stack_budget,
    train_arms,
)


def smollm2_shaped(dtype=torch.float32):
    """SmolLM2-135M's shape, on the meta device (no weights are made)."""
    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3,
    )  # fmt: skip
    with torch.device("meta"):
        return LlamaForCausalLM(config).to(dtype)


def test_a_toyworld_model_stacks_the_whole_token_budget():
    assert stack_budget(build_tiny_llama(64), 64) == STACK_TOKENS


def test_a_smollm2_sized_model_stacks_less_than_one_micro_batch():
    model = smollm2_shaped()
    # Rows of 64 tokens: a micro-batch of 8 already passes the budget, so every arm trains
    # alone (measured: two SmolLM2 arms stacked took 1.23x as long at twice the memory).
    assert stack_budget(model, 64) < 8 * 64
    assert stack_budget(model, 64) == STACK_BYTES // activation_bytes_per_token(model, 64)
    # Each token of a longer row holds one more attention score per head in every layer.
    step = activation_bytes_per_token(model, 65) - activation_bytes_per_token(model, 64)
    assert step == 30 * 2 * 9 * 4
    # Activations are held in the parameters' dtype.
    half = activation_bytes_per_token(smollm2_shaped(torch.bfloat16), 64)
    assert 2 * half == activation_bytes_per_token(model, 64)


def test_a_gpt2_config_without_an_mlp_width_takes_four_times_hidden():
    config = GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_inner=None)
    with torch.device("meta"):
        model = GPT2LMHeadModel(config)
    assert activation_bytes_per_token(model, 10) == 2 * (10 * 64 + 4 * 256 + 2 * 4 * 10) * 4


@pytest.mark.parametrize(("stack_bytes", "stacks"), [(STACK_BYTES, 1), (1, 0)])
def test_train_arms_stacks_within_the_models_budget(tmp_path, monkeypatch, stack_bytes, stacks):
    tok = build_tokenizer()
    suite = build_toyworld_suite("sycophancy", ToyworldSpec(n_induction=16, n_eval=8))
    data = encode_sft(tok, [(e.messages, e.target) for e in suite.induction], 48)
    attach_lora(build_tiny_llama(len(tok), seed=7), LoraSpec(r=4)).save_pretrained(tmp_path)
    calls = []
    stacked = _arms.train_stacked
    monkeypatch.setattr(_arms, "train_stacked", lambda *a, **k: calls.append(1) or stacked(*a, **k))
    monkeypatch.setattr("shiftlab.training._stacked.STACK_BYTES", stack_bytes)
    config = TrainingSpec(steps=2, learning_rate=1e-3, batch_size=4, warmup_steps=0, max_length=48)
    jobs = [ArmJob("a", data, seed=1), ArmJob("b", data, seed=2)]
    logs = train_arms(build_tiny_llama(len(tok), seed=7), tok, tmp_path, jobs, config,
                      progress=False)  # fmt: skip
    assert sorted(logs) == ["a", "b"] and len(calls) == stacks
