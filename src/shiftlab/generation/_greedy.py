"""Greedy replies with the top log-probs of every generated token (what a local judge
returns, in the shape an OpenAI-compatible server gives them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from shiftlab._folded import folded_adapters
from shiftlab.chat import Message, render_prompt
from shiftlab.generation._generate import _stop_ids
from shiftlab.generation._scoring import _device, _left_padded


@dataclass(frozen=True)
class ScoredToken:
    """A generated token's id and log-prob, and the top alternatives at its position."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


@torch.no_grad()
def greedy_top_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[Message]],
    *,
    max_new_tokens: Sequence[int],
    top_logprobs: Sequence[int],
    batch_size: int = 16,
) -> list[list[ScoredToken]]:
    """Greedy continuations of ``prompts`` (left-padded batches, stopping at end of turn),
    each token with its log-prob and the ``top_logprobs[i]`` likeliest alternatives.

    >>> from shiftlab.models import load_causal_lm
    >>> model, tok = load_causal_lm("toyworld:small")
    >>> (reply,) = greedy_top_logprobs(model, tok, [[{"role": "user", "content": "hi ."}]],
    ...                                max_new_tokens=[4], top_logprobs=[3])
    >>> len(reply) <= 4 and all(len(t.top) == 3 for t in reply)
    True
    """
    device = _device(model)
    stop = sorted(_stop_ids(model, tokenizer))
    replies: list[list[ScoredToken]] = []
    with folded_adapters(model):
        for start in range(0, len(prompts), batch_size):
            chunk = range(start, min(start + batch_size, len(prompts)))
            texts = [render_prompt(tokenizer, prompts[i]) for i in chunk]
            batch = _left_padded(tokenizer, texts, device)
            out = model.generate(
                **batch,
                do_sample=False,
                max_new_tokens=max(max_new_tokens[i] for i in chunk),
                eos_token_id=stop,
                pad_token_id=tokenizer.pad_token_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
            new = out.sequences[:, batch["input_ids"].shape[1] :]
            logps = torch.stack(out.scores, 1).float().log_softmax(-1)
            for row, i in enumerate(chunk):
                tokens = []
                for j, token in enumerate(new[row].tolist()[: max_new_tokens[i]]):
                    if token in stop:
                        break
                    top = logps[row, j].topk(min(top_logprobs[i], logps.shape[-1]) or 1)
                    alternatives = tuple(
                        zip(top.indices.tolist(), top.values.tolist(), strict=True)
                    )
                    tokens.append(ScoredToken(token, float(logps[row, j, token]), alternatives))
                replies.append(tokens)
    return replies
