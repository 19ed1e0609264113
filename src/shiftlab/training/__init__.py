"""Training: encoding, packing, the SFT/BCT/ACT objectives and the resumable loop."""

from shiftlab.training._arms import ArmJob, train_arms
from shiftlab.training._batching import (
    IGNORE_INDEX,
    EncodedExample,
    collate,
    data_order,
    encode_example,
    render_prompt,
)
from shiftlab.training._loop import (
    TRAINER_VERSION,
    PairedExample,
    encode_pairs,
    encode_sft,
    linear_schedule,
    train,
    train_sft,
)
from shiftlab.training._losses import act_loss, bct_loss, decoder_layers, sft_loss
from shiftlab.training._packing import best_fit_decreasing, pack, pack_rows

__all__ = [
    "IGNORE_INDEX",
    "TRAINER_VERSION",
    "ArmJob",
    "EncodedExample",
    "PairedExample",
    "act_loss",
    "bct_loss",
    "best_fit_decreasing",
    "collate",
    "data_order",
    "decoder_layers",
    "encode_example",
    "encode_pairs",
    "encode_sft",
    "linear_schedule",
    "pack",
    "pack_rows",
    "render_prompt",
    "sft_loss",
    "train",
    "train_arms",
    "train_sft",
]
