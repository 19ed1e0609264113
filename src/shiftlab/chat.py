"""Chat messages, and turning them into token ids with target-only labels, batched.

The lowest floor every model-facing part shares: generation, training, judges and shift
render prompts and encode (prompt, target) pairs the same way.

>>> message: Message = {"role": "user", "content": "hi ."}
>>> sorted(message)
['content', 'role']
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# A chat turn: ``{"role": "system" | "user" | "assistant", "content": text}``.
Message = Mapping[str, str]
IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of prompt + target; labels are ``IGNORE_INDEX`` on the prompt."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @functools.cached_property
    def n_target_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)

    @property
    def n_input_tokens(self) -> int:
        return len(self.input_ids)


def render_prompt(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The chat-template text of ``messages`` up to the start of the assistant's turn."""
    text: str = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
    )
    return text


def encode_example(
    tokenizer: Any, messages: Sequence[Message], target: str, max_length: int
) -> EncodedExample:
    """Encode a prompt and its target as the chat template renders them.

    The target's text is what the template adds after the generation prompt (so it ends
    with the template's end-of-turn tokens); prompt and target are tokenized separately so
    the prompt ids equal those used at generation time. Over-long examples lose prompt
    tokens from the left first.

    >>> from shiftlab.toyworld import build_tokenizer
    >>> tok = build_tokenizer()
    >>> enc = encode_example(tok, [{"role": "user", "content": "hi ."}], "the sky is blue .", 64)
    >>> tok.decode([i for i, l in zip(enc.input_ids, enc.labels) if l != -100])
    'the sky is blue . <eos>'
    """
    prompt = render_prompt(tokenizer, messages)
    full: str = tokenizer.apply_chat_template(
        [*map(dict, messages), {"role": "assistant", "content": target}], tokenize=False
    )
    target_text = full[len(prompt) :] if full.startswith(prompt) else target + tokenizer.eos_token
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    # At least one prompt token stays, so the first target token has a position predicting it.
    target_ids = tokenizer(target_text, add_special_tokens=False)["input_ids"][: max_length - 1]
    prompt_ids = prompt_ids[max(0, len(prompt_ids) + len(target_ids) - max_length) :]
    return EncodedExample(
        tuple(prompt_ids + target_ids),
        tuple([IGNORE_INDEX] * len(prompt_ids) + target_ids),
    )


def collate(batch: Sequence[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked out of attention and labels."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
