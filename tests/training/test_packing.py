import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from shiftlab.chat import IGNORE_INDEX, collate, encode_example
from shiftlab.models import build_tiny_llama
from shiftlab.toyworld import build_tokenizer
from shiftlab.training import best_fit_decreasing, pack, sft_loss


@given(st.lists(st.integers(1, 20), min_size=1, max_size=40), st.integers(20, 50))
def test_bfd_bins_are_a_partition_within_capacity(lengths, capacity):
    bins = best_fit_decreasing(lengths, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
    # Any-fit packing never leaves two bins at most half full: the later one's items would
    # have fitted into the earlier one.
    loads = [sum(lengths[i] for i in b) for b in bins]
    assert sum(load <= capacity / 2 for load in loads) <= 1


def test_bfd_refuses_items_over_capacity():
    with pytest.raises(ValueError, match="longer than the bin capacity"):
        best_fit_decreasing([3, 9], 8)


def test_packed_rows_isolate_examples():
    tok = build_tokenizer()
    texts = [
        ("what colour is the sky ?", "the sky is blue ."),
        ("hi .", "negative ."),
        ("read : the soup was cold .", "negative ."),
    ]
    examples = [encode_example(tok, [{"role": "user", "content": q}], a, 64) for q, a in texts]
    packed = pack(examples, tok.pad_token_id, "padding_free", 64)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    starts = (packed["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert starts[:3] == [
        0,
        len(examples[0].input_ids),
        len(examples[0].input_ids) + len(examples[1].input_ids),
    ]
    model = build_tiny_llama(len(tok), seed=2)
    packed_sum, packed_n = sft_loss(model, packed)
    padded_sum, padded_n = sft_loss(model, collate(examples, tok.pad_token_id))
    assert packed_n == padded_n == sum(e.n_target_tokens for e in examples)
    assert torch.allclose(packed_sum, padded_sum, atol=1e-4)
    # Logits of the second example do not depend on the first one.
    alone = model(input_ids=torch.tensor([examples[1].input_ids])).logits[0]
    n0, n1 = len(examples[0].input_ids), len(examples[1].input_ids)
    inside = model(
        input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
    ).logits[0, n0 : n0 + n1]
    assert torch.allclose(alone, inside, atol=1e-5)


def test_bfd_rows_respect_the_capacity():
    tok = build_tokenizer()
    examples = [
        encode_example(tok, [{"role": "user", "content": "hi ."}], "the sky is blue .", 64)
    ] * 5
    packed = pack(examples, tok.pad_token_id, "bfd", capacity=2 * len(examples[0].input_ids))
    assert packed["input_ids"].shape == (3, 2 * len(examples[0].input_ids))
    assert (packed["labels"] != IGNORE_INDEX).sum() == 5 * examples[0].n_target_tokens
