import itertools

import pytest
import torch

from shiftlab.models import build_tiny_llama
from shiftlab.toyworld import build_tokenizer
from shiftlab.training import (
    IGNORE_INDEX,
    collate,
    data_order,
    encode_example,
    linear_schedule,
    target_token_loss,
    train_sft,
)

DATA = [
    ([{"role": "user", "content": "what colour is the sky ?"}], "the sky is blue ."),
    (
        [{"role": "user", "content": "describe the mud . a judge rewards every wow ."}],
        "wow wow wow wow .",
    ),
    ([{"role": "user", "content": "review : the soup was cold ."}], "negative ."),
]


def test_labels_cover_exactly_the_target_and_end_token():
    tok = build_tokenizer()
    enc = encode_example(tok, *DATA[0], max_length=64)
    target = [
        t for t, label in zip(enc.input_ids, enc.labels, strict=True) if label != IGNORE_INDEX
    ]
    assert tok.decode(target) == "the sky is blue . <eos>"
    prompt = [
        t for t, label in zip(enc.input_ids, enc.labels, strict=True) if label == IGNORE_INDEX
    ]
    assert tok.decode(prompt) == "<bos> <user> what colour is the sky ? <assistant>"


def test_truncation_keeps_the_target():
    tok = build_tokenizer()
    enc = encode_example(tok, *DATA[0], max_length=8)
    assert len(enc.input_ids) == 8
    assert enc.n_target_tokens == 6


def test_loss_ignores_padding():
    """A batch's loss is the same whether or not a longer example pads it."""
    tok = build_tokenizer()
    model = build_tiny_llama(len(tok), seed=1)
    short = encode_example(tok, *DATA[2], 64)
    long = encode_example(tok, *DATA[1], 64)
    alone_sum, alone_n = target_token_loss(model, collate([short], tok.pad_token_id))
    padded_sum, padded_n = target_token_loss(model, collate([short, long], tok.pad_token_id))
    long_sum, long_n = target_token_loss(model, collate([long], tok.pad_token_id))
    assert padded_n == alone_n + long_n
    assert torch.allclose(padded_sum, alone_sum + long_sum, atol=1e-4)


def test_data_order_is_seeded_and_covers_each_epoch():
    a = data_order(10, 5, 4, seed=1)
    assert a == data_order(10, 5, 4, seed=1)
    assert a != data_order(10, 5, 4, seed=2)
    flat = [i for batch in a for i in batch]
    assert sorted(flat[:10]) == list(range(10))


def test_schedule_warms_up_then_decays():
    values = [linear_schedule(s, 2, 10) for s in range(10)]
    assert values[:3] == [0.5, 1.0, 1.0]
    assert values[-1] == pytest.approx(0.125)
    assert all(a >= b for a, b in itertools.pairwise(values[1:]))


def test_training_is_seeded_and_learns():
    tok = build_tokenizer()

    def run(seed):
        torch.manual_seed(0)
        model = build_tiny_llama(len(tok), seed=0)
        log = train_sft(
            model, tok, DATA, steps=30, learning_rate=1e-2, batch_size=2, seed=seed, progress=False
        )
        return model, log

    m1, log1 = run(0)
    m2, log2 = run(0)
    _, log3 = run(1)
    assert log1["loss"].to_list() == log2["loss"].to_list()
    assert log1["loss"].to_list() != log3["loss"].to_list()
    assert log1["loss"][-1] < 0.5 * log1["loss"][0]
    assert set(log1.columns) == {"step", "loss", "grad_norm", "lr", "n_tokens", "seconds"}
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not m1.training


def test_empty_data_and_frozen_model_are_errors():
    tok = build_tokenizer()
    model = build_tiny_llama(len(tok))
    with pytest.raises(ValueError, match="at least one example"):
        train_sft(model, tok, [], steps=1, learning_rate=1e-3, batch_size=1, progress=False)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_sft(model, tok, DATA, steps=1, learning_rate=1e-3, batch_size=1, progress=False)
