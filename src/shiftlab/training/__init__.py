"""Training: batching with target-only labels and the supervised fine-tuning loop."""

from shiftlab.training._batching import (
    IGNORE_INDEX,
    EncodedExample,
    collate,
    data_order,
    encode_example,
    render_prompt,
)
from shiftlab.training._sft import linear_schedule, target_token_loss, train_sft

__all__ = [
    "IGNORE_INDEX",
    "EncodedExample",
    "collate",
    "data_order",
    "encode_example",
    "linear_schedule",
    "render_prompt",
    "target_token_loss",
    "train_sft",
]
