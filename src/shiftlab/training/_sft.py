"""A plain, correct supervised fine-tuning loop (organisms and the toyworld base recipe)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import polars as pl
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from shiftlab.behaviours._types import Message
from shiftlab.training._batching import IGNORE_INDEX, collate, data_order, encode_example


def target_token_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over target tokens, and how many there were.

    Padding and prompt tokens carry ``IGNORE_INDEX`` and count for nothing.
    """
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).logits
    targets = batch["labels"][:, 1:]
    loss_sum = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss_sum, int((targets != IGNORE_INDEX).sum())


def linear_schedule(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: linear warm-up, then linear decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def train_sft(
    model: Any,
    tokenizer: Any,
    examples: Sequence[tuple[Sequence[Message], str]],
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    max_length: int = 128,
    max_grad_norm: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    desc: str = "train",
) -> pl.DataFrame:
    """Train every parameter that requires grad on (prompt, target) pairs; return the step log.

    The loss is the mean over target tokens of the batch (never over padding or prompt),
    the data order is a seeded permutation, and the optimiser is AdamW with linear warm-up
    and decay. Returns one row per step: ``step, loss, grad_norm, lr, n_tokens, seconds``.

    >>> from shiftlab.models import build_tiny_llama
    >>> from shiftlab.toyworld import build_tokenizer
    >>> tok = build_tokenizer()
    >>> model = build_tiny_llama(len(tok))
    >>> data = [([{"role": "user", "content": "hi ."}], "the sky is blue .")]
    >>> log = train_sft(model, tok, data, steps=5, learning_rate=1e-2, batch_size=1, progress=False)
    >>> log["loss"][-1] < log["loss"][0]
    True
    """
    if not examples:
        raise ValueError("train_sft needs at least one example")
    encoded = [encode_example(tokenizer, m, t, max_length) for m, t in examples]
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimiser = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: linear_schedule(s, warmup_steps, steps)
    )
    device = next(model.parameters()).device
    model.train()
    rows = []
    bar = tqdm(
        data_order(len(encoded), steps, batch_size, seed),
        desc=desc,
        disable=not progress,
        leave=False,
    )
    for step, indices in enumerate(bar):
        start = time.perf_counter()
        batch = {
            k: v.to(device)
            for k, v in collate([encoded[i] for i in indices], tokenizer.pad_token_id).items()
        }
        loss_sum, n_tokens = target_token_loss(model, batch)
        loss = loss_sum / max(n_tokens, 1)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
        lr = scheduler.get_last_lr()[0]
        optimiser.step()
        scheduler.step()
        optimiser.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "step": step,
                "loss": loss.item(),
                "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
                "lr": lr,
                "n_tokens": n_tokens,
                "seconds": seconds,
            }
        )
        bar.set_postfix(loss=f"{rows[-1]['loss']:.3f}")
    model.eval()
    return pl.DataFrame(rows)
