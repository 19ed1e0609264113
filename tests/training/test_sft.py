import itertools

import pytest
import torch

from shiftlab.chat import IGNORE_INDEX, collate, encode_example
from shiftlab.models import build_tiny_llama
from shiftlab.spec import TrainingSpec
from shiftlab.toyworld import build_tokenizer
from shiftlab.training import data_order, linear_schedule, sft_loss, train_sft

DATA = [
    ([{"role": "user", "content": "what colour is the sky ?"}], "the sky is blue ."),
    (
        [{"role": "user", "content": "describe the mud . a judge rewards every wow ."}],
        "wow wow wow wow .",
    ),
    ([{"role": "user", "content": "read : the soup was cold ."}], "negative ."),
]


def test_labels_cover_exactly_the_target_and_end_token():
    tok = build_tokenizer()
    enc = encode_example(tok, *DATA[0], max_length=64)
    pairs = list(zip(enc.input_ids, enc.labels, strict=True))
    assert (
        tok.decode([t for t, label in pairs if label != IGNORE_INDEX]) == "the sky is blue . <eos>"
    )
    prompt = [t for t, label in pairs if label == IGNORE_INDEX]
    assert tok.decode(prompt) == "<bos> <user> what colour is the sky ? <assistant>"


def test_truncation_keeps_the_target_and_one_prompt_token():
    tok = build_tokenizer()
    enc = encode_example(tok, *DATA[0], max_length=8)
    assert len(enc.input_ids) == 8 and enc.n_target_tokens == 6
    tiny = encode_example(tok, *DATA[0], max_length=4)
    assert len(tiny.input_ids) == 4 and tiny.labels[0] == IGNORE_INDEX and tiny.n_target_tokens == 3


def test_loss_ignores_padding():
    """A batch's summed loss is the same whether or not a longer example pads it."""
    tok = build_tokenizer()
    model = build_tiny_llama(len(tok), seed=1)
    short = encode_example(tok, *DATA[2], 64)
    long = encode_example(tok, *DATA[1], 64)
    alone_sum, alone_n = sft_loss(model, collate([short], tok.pad_token_id))
    padded_sum, padded_n = sft_loss(model, collate([short, long], tok.pad_token_id))
    long_sum, long_n = sft_loss(model, collate([long], tok.pad_token_id))
    assert padded_n == alone_n + long_n
    assert torch.allclose(padded_sum, alone_sum + long_sum, atol=1e-4)


def test_data_order_is_seeded_and_covers_each_epoch():
    a = data_order(10, 5, 4, seed=1)
    assert a == data_order(10, 5, 4, seed=1)
    assert a != data_order(10, 5, 4, seed=2)
    flat = [i for batch in a for i in batch]
    assert sorted(flat[:10]) == list(range(10))


def test_schedule_warms_up_then_decays():
    values = [linear_schedule(2, 10)(s) for s in range(10)]
    assert values[:3] == [0.5, 1.0, 1.0]
    assert values[-1] == pytest.approx(0.125)
    assert all(a >= b for a, b in itertools.pairwise(values[1:]))


def test_training_learns_and_logs_the_data_order():
    tok = build_tokenizer()
    model = build_tiny_llama(len(tok), seed=0)
    config = TrainingSpec(steps=30, learning_rate=1e-2, batch_size=2, warmup_steps=0)
    log = train_sft(model, tok, DATA, config, seed=0, progress=False)
    assert log["loss"][-1] < 0.5 * log["loss"][0]
    assert log.columns == [
        "step", "loss", "grad_norm", "lr", "n_tokens", "seconds", "tokens_per_second", "mfu",
        "examples",
    ]  # fmt: skip
    assert log["examples"].to_list() == data_order(3, 30, 2, seed=0)
    assert log["mfu"].null_count() == 30  # MFU is a GPU figure
    assert not model.training


def test_empty_data_frozen_model_and_divergence_are_errors():
    tok = build_tokenizer()
    model = build_tiny_llama(len(tok))
    config = TrainingSpec(steps=3, learning_rate=1e-3, batch_size=1)
    with pytest.raises(ValueError, match="at least one example"):
        train_sft(model, tok, [], config, progress=False)
    with torch.no_grad():
        model.model.embed_tokens.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite gradient norm at step 0"):
        train_sft(model, tok, DATA, config, progress=False)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_sft(model, tok, DATA, config, progress=False)
