"""Batched generation with a KV cache: greedy or seeded sampling, with per-token log-probs.

Sampling uses the Gumbel-max trick with noise from a counter-based hash of
``(seed, step, token)``, so a sequence depends only on its own seed: not on the batch
size, the batch's other prompts or their order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from tqdm.auto import tqdm

from shiftlab._folded import folded_adapters
from shiftlab.chat import Message, render_prompt

_MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Generation:
    """One generated continuation."""

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]

    @property
    def mean_logprob(self) -> float:
        """Mean per-token log-probability under the model (temperature 1)."""
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else 0.0


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32) on int64 tensors holding values in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def gumbel_noise(seeds: torch.Tensor, step: int, vocab_size: int) -> torch.Tensor:
    """Gumbel(0, 1) noise of shape ``(len(seeds), vocab_size)``, a pure function of its inputs."""
    seeds = seeds.to(torch.int64)
    row = _mix32((seeds & _MASK32) ^ _mix32((seeds >> 32) & _MASK32))
    row = _mix32(row ^ _mix32(torch.full_like(row, step + 0x9E3779B9) & _MASK32))
    tokens = _mix32(torch.arange(vocab_size, dtype=torch.int64, device=seeds.device) + 0x632BE5AB)
    bits = _mix32(row[:, None] ^ tokens[None, :])
    uniform = (bits.to(torch.float64) + 0.5) / 2.0**32
    return -torch.log(-torch.log(uniform))


def _top_p_mask(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Set logits outside the nucleus of probability ``top_p`` to -inf."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    drop = probs.cumsum(-1) - probs >= top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


@torch.no_grad()
def _generate_batch(
    model: Any,
    prompt_ids: list[list[int]],
    *,
    pad_id: int,
    stop: set[int],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seeds: list[int] | None,
) -> list[tuple[list[int], list[float]]]:
    device = next(model.parameters()).device
    width = max(map(len, prompt_ids))
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompt_ids):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    seed_tensor = torch.tensor(seeds, dtype=torch.int64, device=device) if seeds else None
    stop_tensor = torch.tensor(sorted(stop), device=device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    # transformers 5 renamed ``past_key_values`` to ``cache``; answer in the model's own terms.
    cache_kw = "cache" if "cache" in out else "past_key_values"
    cache = out[cache_kw]
    logits = out.logits[:, -1, :].float()
    done = torch.zeros(len(prompt_ids), dtype=torch.bool, device=device)
    tokens, logprobs = [], []
    for step in range(max_new_tokens):
        logp = logits.log_softmax(-1)
        if temperature == 0.0 or seed_tensor is None:
            chosen = logp.argmax(-1)
        else:
            scores = _top_p_mask(logits / temperature, top_p).double()
            chosen = (scores + gumbel_noise(seed_tensor, step, logits.shape[-1])).argmax(-1)
        # -1 marks steps after a row stopped; they are dropped below.
        tokens.append(torch.where(done, -1, chosen))
        logprobs.append(logp.gather(-1, chosen[:, None])[:, 0])
        done = done | torch.isin(chosen, stop_tensor)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        out = model(
            input_ids=chosen[:, None],
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{cache_kw: cache},
        )
        cache, logits = out[cache_kw], out.logits[:, -1, :].float()
    token_matrix = torch.stack(tokens, 1).tolist()
    logprob_matrix = torch.stack(logprobs, 1).tolist()
    results = []
    for row_tokens, row_logprobs in zip(token_matrix, logprob_matrix, strict=True):
        keep = [i for i, t in enumerate(row_tokens) if t != -1]
        results.append(([row_tokens[i] for i in keep], [row_logprobs[i] for i in keep]))
    return results


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seeds: Sequence[int] | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> list[Generation]:
    """Continue each chat prompt; greedy when ``temperature`` is 0, else seeded sampling.

    Prompts are batched by length, and a LoRA model's adapters are folded into their
    weights meanwhile (:func:`~shiftlab.generation.folded_adapters`). The returned text
    excludes the stop token; token ids and log-probs include it. ``seeds`` gives one seed
    per prompt (required to sample).

    >>> from shiftlab.models import load_causal_lm
    >>> model, tok = load_causal_lm("toyworld:small")
    >>> prompt = [{"role": "user", "content": "what colour is the sky ?"}]
    >>> [g.text for g in generate(model, tok, [prompt])]
    ['the sky is blue .']
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    if temperature > 0 and (seeds is None or len(seeds) != len(prompts)):
        raise ValueError("sampling needs one seed per prompt")
    encoded = [
        tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"]
        for p in prompts
    ]
    stop = _stop_ids(model, tokenizer)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    results: list[Generation | None] = [None] * len(encoded)
    starts = range(0, len(order), batch_size)
    with torch.no_grad(), folded_adapters(model):
        for start in tqdm(starts, desc="generate", disable=not progress, leave=False):
            chunk = order[start : start + batch_size]
            outputs = _generate_batch(
                model,
                [encoded[i] for i in chunk],
                pad_id=tokenizer.pad_token_id,
                stop=stop,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                seeds=[int(seeds[i]) for i in chunk]
                if seeds is not None and temperature > 0
                else None,
            )
            for index, (token_ids, logprobs) in zip(chunk, outputs, strict=True):
                text_ids = [t for t in token_ids if t not in stop]
                text = tokenizer.decode(text_ids, skip_special_tokens=True).strip()
                results[index] = Generation(text, tuple(token_ids), tuple(logprobs))
    assert all(r is not None for r in results)
    return cast(list[Generation], results)
