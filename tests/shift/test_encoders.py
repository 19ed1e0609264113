"""The default sentence encoder and the embedding cache."""

import numpy as np
import pytest
import torch

from shiftlab.shift import EmbeddingCache, TextEncoder, default_encoder_path, embed

TEXTS = ["the sky is blue", "The sky is azure today.", "Tax law changed in 2020.", "ok"]


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(batch_size=2)


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
