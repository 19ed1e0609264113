"""Teacher-forced scoring: log-probs of given continuations, next-token distributions, beams."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from shiftlab._folded import folded_adapters
from shiftlab._logits import logits_at
from shiftlab.chat import (
    IGNORE_INDEX,
    EncodedExample,
    Message,
    collate,
    encode_example,
    render_prompt,
)
from shiftlab.generation._generate import Generation, _stop_ids

# Bump when teacher-forced or generated log-probs are computed otherwise, their rounding
# included: artefact ids include it, so a store never mixes scores of two versions. 1:
# logits only where a label is, the last decoder layer narrowed to them (:func:`logits_at`).
# 2: LoRA adapters folded into their weights while scoring and generating.
LOGPROBS_VERSION = 2


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def score_continuations(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[Message]],
    continuations: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int = 1024,
) -> list[tuple[float, ...]]:
    """Per-token log-probs of each continuation (with its end-of-turn tokens) after its prompt.

    >>> from shiftlab.models import load_causal_lm
    >>> model, tok = load_causal_lm("toyworld:small")
    >>> prompt = [{"role": "user", "content": "what colour is the sky ?"}]
    >>> right, wrong = score_continuations(model, tok, [prompt, prompt],
    ...                                    ["the sky is blue .", "the sky is red ."])
    >>> sum(right) > sum(wrong)
    True
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    encoded = [
        encode_example(tokenizer, p, c, max_length)
        for p, c in zip(prompts, continuations, strict=True)
    ]
    return _target_logprobs(model, encoded, tokenizer.pad_token_id, batch_size)


def _target_logprobs(
    model: Any, encoded: Sequence[EncodedExample], pad_id: int, batch_size: int
) -> list[tuple[float, ...]]:
    """Log-probs of each example's labelled tokens, in length-sorted right-padded batches.

    Logits are formed only where the next token is labelled (:func:`logits_at`), which
    also runs the last decoder layer only there where it can; a LoRA model's adapters
    are folded into their weights meanwhile (:func:`~shiftlab.generation.folded_adapters`).
    """
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    out: list[tuple[float, ...]] = [()] * len(encoded)
    device = _device(model)
    with torch.no_grad(), folded_adapters(model):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = {
                k: v.to(device) for k, v in collate([encoded[i] for i in chunk], pad_id).items()
            }
            labels = batch.pop("labels")
            keep = labels[:, 1:] != IGNORE_INDEX
            predicting = torch.nn.functional.pad(keep, (0, 1))
            logp = logits_at(model, batch, predicting).float().log_softmax(-1)
            picked = logp.gather(-1, labels[:, 1:][keep][:, None])[:, 0].tolist()
            ends = [0, *keep.sum(1).cumsum(0).tolist()]
            for row, i in enumerate(chunk):
                out[i] = tuple(picked[ends[row] : ends[row + 1]])
    return out


@torch.no_grad()
def choice_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[Message]],
    choices: Sequence[Sequence[str]],
    *,
    prefix: str = "",
    batch_size: int = 32,
) -> list[dict[str, float]]:
    """Each answer choice's log-probability right after the assistant turn starts with
    ``prefix`` (no end-of-turn tokens: the choice is a continuation, not a whole reply).

    >>> from shiftlab.models import load_causal_lm
    >>> model, tok = load_causal_lm("toyworld:small")
    >>> prompt = [{"role": "user", "content": "what colour is the sky ?"}]
    >>> scores = choice_logprobs(model, tok, [prompt], [["the sky is blue", "the sky is red"]])
    >>> scores[0]["the sky is blue"] > scores[0]["the sky is red"]
    True
    """
    encoded, owners = [], []
    for index, (prompt, options) in enumerate(zip(prompts, choices, strict=True)):
        text = render_prompt(tokenizer, prompt) + prefix
        encoded += [_encoded_choice(tokenizer, text, choice) for choice in options]
        owners += [(index, choice) for choice in options]
    out: list[dict[str, float]] = [{} for _ in prompts]
    scores = _target_logprobs(model, encoded, tokenizer.pad_token_id, batch_size)
    for (index, choice), logprobs in zip(owners, scores, strict=True):
        out[index][choice] = sum(logprobs)
    return out


# The same capability questions and multiple-choice eval prompts are scored after every
# run: their token ids are kept per tokenizer (weakly, so a dropped tokenizer takes its
# entries with it), keyed by the text and the vocabulary size, least recently used first
# out. A judge's prompts hold each output and rarely repeat; the bound keeps what they
# leave behind to tens of MiB (toyworld's capability suite needs 440 entries).
_TOKEN_IDS: weakref.WeakKeyDictionary[Any, OrderedDict[tuple[str, int], tuple[int, ...]]]
_TOKEN_IDS = weakref.WeakKeyDictionary()
TOKEN_IDS_KEPT = 1 << 13


def _token_ids(tokenizer: Any, text: str) -> tuple[int, ...]:
    kept = _TOKEN_IDS.setdefault(tokenizer, OrderedDict())
    key = (text, len(tokenizer))
    # Taken out and put back (to the recent end) rather than moved: a judge scoring from
    # several threads at worst tokenizes a text twice.
    ids = kept.pop(key, None)
    if ids is None:
        ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
    kept[key] = ids
    while len(kept) > TOKEN_IDS_KEPT:
        kept.popitem(last=False)
    return ids


def _encoded_choice(tokenizer: Any, text: str, choice: str) -> EncodedExample:
    """``choice`` as the labelled continuation of the rendered ``text``."""
    base = _token_ids(tokenizer, text)
    full = _token_ids(tokenizer, text + choice)
    if full[: len(base)] != base or len(full) == len(base):
        # The choice merged with the prefix's last token: score it as its own tokens.
        full = base + _token_ids(tokenizer, choice)
    return EncodedExample(full, (IGNORE_INDEX,) * len(base) + full[len(base) :])


def _left_padded(tokenizer: Any, texts: Sequence[str], device: torch.device) -> dict[str, Any]:
    """Tokenize rendered prompts into one left-padded batch on ``device``."""
    if tokenizer.padding_side != "left":
        raise ValueError("batched decoding needs a left-padding tokenizer")
    batch = tokenizer(list(texts), add_special_tokens=False, padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


def score_token_ids(tokenizer: Any, prefix: str, labels: Sequence[str]) -> tuple[str, list[int]]:
    """The text to score after and the first token each label adds to it.

    That text is ``prefix``, or ``prefix`` plus a space where the tokenizer splits the
    space before a label off as a token of its own (then the labels' first tokens would
    all be that space). ``" 5"`` and ``"5"`` both work as labels.

    >>> from shiftlab.toyworld import build_tokenizer
    >>> score_token_ids(build_tokenizer(), "answer :", ["no", "yes"])[0]
    'answer :'
    """
    spaced = prefix + " " if prefix and not prefix.endswith(" ") else prefix
    for context in dict.fromkeys((prefix, spaced)):
        base = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
        ids = []
        for label in labels:
            joined = (
                context + label if not context or context.endswith(" ") else f"{context} {label}"
            )
            full = tokenizer(joined, add_special_tokens=False)["input_ids"]
            if full[: len(base)] != base or len(full) == len(base):
                full = base + tokenizer(label, add_special_tokens=False)["input_ids"]
            ids.append(full[len(base)])
        if len(set(ids)) == len(ids):
            return context, ids
    raise ValueError(f"score tokens {list(labels)} do not map to distinct tokens")


@torch.no_grad()
def label_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[Message]],
    *,
    prefix: str,
    labels: Sequence[str],
    batch_size: int = 32,
) -> list[list[float]]:
    """Each label's next-token log-probability (its first token's) after the assistant
    turn starts with ``prefix``: how a judge's score or a multiple-choice answer letter is
    read, from one forward pass per prompt.

    >>> from shiftlab.models import load_causal_lm
    >>> model, tok = load_causal_lm("toyworld:small")
    >>> prompt = [{"role": "user", "content": "what colour is the sky ?"}]
    >>> (blue, red), = label_logprobs(model, tok, [prompt], prefix="the sky is",
    ...                                labels=["blue", "red"])
    >>> blue > red
    True
    """
    context, ids = score_token_ids(tokenizer, prefix, labels)
    texts = [render_prompt(tokenizer, p) + context for p in prompts]
    device = _device(model)
    out: list[list[float]] = []
    with folded_adapters(model):
        for start in range(0, len(texts), batch_size):
            batch = _left_padded(tokenizer, texts[start : start + batch_size], device)
            batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            last = torch.zeros(batch["input_ids"].shape, dtype=torch.bool, device=device)
            last[:, -1] = True
            logits = logits_at(model, batch, last)
            out += logits.double().log_softmax(-1)[:, ids].cpu().tolist()
    return out


def expected_score(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[Message]],
    *,
    prefix: str,
    labels: Sequence[str],
    batch_size: int = 32,
) -> list[float]:
    """The judge's expected score: labels valued 1, 2, ... weighted by their next-token
    probabilities after the assistant turn starts with ``prefix``, renormalised over them.
    """
    logprobs = torch.tensor(
        label_logprobs(model, tokenizer, prompts, prefix=prefix, labels=labels,
                       batch_size=batch_size),
        dtype=torch.float64,
    ).reshape(len(prompts), len(labels))  # fmt: skip
    values = torch.arange(1, len(labels) + 1, dtype=torch.float64)
    return (logprobs.softmax(-1) @ values).tolist()


@torch.no_grad()
def beam_search(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[Message]],
    *,
    beam_width: int,
    max_new_tokens: int = 32,
    batch_size: int = 16,
) -> list[list[Generation]]:
    """The ``beam_width`` best beams of each prompt (``transformers`` beam search), with
    per-token log-probs rescored at temperature 1.
    """
    device = _device(model)
    stop = sorted(_stop_ids(model, tokenizer))
    texts = [render_prompt(tokenizer, p) for p in prompts]
    beams: list[list[list[int]]] = []
    with folded_adapters(model):
        for start in range(0, len(texts), batch_size):
            batch = _left_padded(tokenizer, texts[start : start + batch_size], device)
            out = model.generate(
                **batch,
                num_beams=beam_width,
                num_return_sequences=beam_width,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=stop,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = out[:, batch["input_ids"].shape[1] :].tolist()
            # Like ``generate``: ids up to and including the stop token, padding dropped.
            cut = [next((j + 1 for j, t in enumerate(ids) if t in stop), len(ids)) for ids in new]
            rows = [ids[:n] for ids, n in zip(new, cut, strict=True)]
            beams += [rows[i : i + beam_width] for i in range(0, len(rows), beam_width)]
    flat_prompts = [p for p, rows in zip(prompts, beams, strict=True) for _ in rows]
    flat_texts = [
        tokenizer.decode([t for t in ids if t not in stop], skip_special_tokens=True).strip()
        for rows in beams
        for ids in rows
    ]
    logprobs = iter(
        score_continuations(model, tokenizer, flat_prompts, flat_texts, batch_size=batch_size)
    )
    texts_iter = iter(flat_texts)
    return [
        [Generation(next(texts_iter), tuple(ids), next(logprobs)) for ids in rows] for rows in beams
    ]
