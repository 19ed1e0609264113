"""Training data: (prompt, target) pairs and clean/wrapped triples encoded for the
objectives, and the seeded order in which a run visits them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from shiftlab.chat import EncodedExample, Message, encode_example


@dataclass(frozen=True)
class PairedExample:
    """Encoded clean and wrapped prompts sharing one target suffix."""

    clean: EncodedExample
    wrapped: EncodedExample

    @property
    def n_target_tokens(self) -> int:
        return self.clean.n_target_tokens

    @property
    def n_input_tokens(self) -> int:
        return self.clean.n_input_tokens + self.wrapped.n_input_tokens


Encoded = EncodedExample | PairedExample


def encode_sft(
    tokenizer: Any, examples: Sequence[tuple[Sequence[Message], str]], max_length: int
) -> list[EncodedExample]:
    """Encode (prompt messages, target) pairs for the ``sft`` objective."""
    return [
        encode_example(tokenizer, messages, target, max_length) for messages, target in examples
    ]


def encode_pairs(
    tokenizer: Any,
    pairs: Sequence[tuple[Sequence[Message], Sequence[Message], str]],
    max_length: int,
) -> list[PairedExample]:
    """Encode (clean messages, wrapped messages, suffix) triples for ``bct`` / ``act``."""
    out = []
    for clean, wrapped, suffix in pairs:
        a = encode_example(tokenizer, clean, suffix, max_length)
        b = encode_example(tokenizer, wrapped, suffix, max_length)
        if a.n_target_tokens != b.n_target_tokens:
            raise ValueError(
                "clean and wrapped prompts truncate the suffix differently; raise max_length"
            )
        out.append(PairedExample(a, b))
    return out


def data_order(n_examples: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Example indices for each step: seeded epoch permutations, concatenated.

    >>> data_order(4, 3, 2, seed=0) == data_order(4, 3, 2, seed=0)
    True
    """
    generator = torch.Generator().manual_seed(seed)
    needed = steps * batch_size
    flat: list[int] = []
    while len(flat) < needed:
        flat += torch.randperm(n_examples, generator=generator).tolist()
    return [flat[i * batch_size : (i + 1) * batch_size] for i in range(steps)]
