"""The default sentence encoder and the embedding cache."""

import numpy as np
import pytest
import torch

from shiftlab.shift import (
    EmbeddingCache,
    TextEncoder,
    default_encoder_path,
    embed,
    encoder_identity,
    length_batches,
    resolve_precision,
)

TEXTS = ["the sky is blue", "The sky is azure today.", "Tax law changed in 2020.", "ok"]


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(batch_size=2, precision="float32")


def test_mean_pooled_unit_vectors_match_a_direct_computation(encoder):
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    from transformers import AutoModel, AutoTokenizer

    folder = default_encoder_path()
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder)
    with torch.no_grad():
        hidden = model(**tok(TEXTS[1], return_tensors="pt")).last_hidden_state[0]
    direct = torch.nn.functional.normalize(hidden.mean(0), dim=0).numpy()
    assert np.allclose(vectors[1], direct, atol=1e-5)  # batched with padding, same vector
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_the_cache_embeds_each_text_once(encoder, tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    calls = []
    encode = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda texts: calls.append(list(texts)) or encode(texts))
    first = embed([*TEXTS, TEXTS[0]], encoder, cache)
    assert calls == [TEXTS] and np.array_equal(first[0], first[-1])
    again = embed(TEXTS[::-1], encoder, EmbeddingCache(tmp_path / "emb.sqlite"))
    assert len(calls) == 1 and np.array_equal(again, first[:4][::-1])
    assert encoder.name.startswith("sentence-transformers/all-MiniLM-L6-v2@")


def test_bfloat16_embeddings_stay_unit_float32_rows_near_the_float32_ones(encoder):
    # Forced, so that it runs on every CPU (emulated where the hardware has no bfloat16):
    # bfloat16 keeps 8 bits of mantissa, so a vector moves by about 2^-8 per layer at most.
    fast = TextEncoder(batch_size=2, precision="bfloat16")
    low, exact = fast.encode(TEXTS), encoder.encode(TEXTS)
    assert low.dtype == np.float32
    assert np.allclose(np.linalg.norm(low, axis=1), 1.0, atol=1e-6)
    assert (low * exact).sum(1).min() > 0.999
    assert fast.name == encoder.name + "+bfloat16"


def test_precision_auto_is_float32_without_hardware_bfloat16(monkeypatch):
    from shiftlab.shift import _encoders

    monkeypatch.setattr(_encoders, "native_bfloat16", lambda: False)
    assert resolve_precision("auto", "cpu") == "float32"
    assert encoder_identity(precision="auto", device="cpu") == encoder_identity(precision="float32")
    monkeypatch.setattr(_encoders, "native_bfloat16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bfloat16"
    assert resolve_precision("float32", "cpu") == "float32"


def test_batches_hold_each_text_once_within_both_budgets():
    lengths = [5, 1, 30, 4, 4, 6, 2, 9, 7]
    batches = length_batches(lengths, max_texts=3, max_tokens=20)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)  # in order of length
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert len(batch) <= 3 and (padded <= 20 or len(batch) == 1)
    assert [2] in batches  # longer than the budget: alone


def test_the_batching_does_not_change_the_vectors(encoder):
    one_by_one = TextEncoder(batch_size=1, precision="float32").encode(TEXTS)
    by_tokens = TextEncoder(batch_tokens=8, precision="float32").encode(TEXTS)
    assert np.allclose(one_by_one, encoder.encode(TEXTS), atol=1e-5)
    assert np.allclose(by_tokens, one_by_one, atol=1e-5)
