"""Training: encoding for the objectives, packing, the SFT/BCT/ACT losses and the resumable
loop (prompts are rendered and encoded by :mod:`shiftlab.chat`)."""

from shiftlab._last_layer import last_layer_at, whole_last_layer
from shiftlab.training._arms import ArmJob, train_arms
from shiftlab.training._encoding import PairedExample, data_order, encode_pairs, encode_sft
from shiftlab.training._fused_ce import (
    FUSED_CE_VERSION,
    fused_cross_entropy,
    fused_cross_entropy_setting,
    fused_linear_cross_entropy,
)
from shiftlab.training._loop import (
    TRAINER_RECIPE_VERSION,
    TRAINER_VERSION,
    Objective,
    linear_schedule,
    train,
    train_sft,
)
from shiftlab.training._losses import act_loss, bct_loss, decoder_layers, sft_loss
from shiftlab.training._packing import best_fit_decreasing, pack, pack_bins, pack_rows
from shiftlab.training._stacked import (
    ARMS_VERSION,
    STACK_BYTES,
    STACK_TOKENS,
    activation_bytes_per_token,
    stack_budget,
    stack_refusal,
)

__all__ = [
    "ARMS_VERSION",
    "FUSED_CE_VERSION",
    "STACK_BYTES",
    "STACK_TOKENS",
    "TRAINER_RECIPE_VERSION",
    "TRAINER_VERSION",
    "ArmJob",
    "Objective",
    "PairedExample",
    "act_loss",
    "activation_bytes_per_token",
    "bct_loss",
    "best_fit_decreasing",
    "data_order",
    "decoder_layers",
    "encode_pairs",
    "encode_sft",
    "fused_cross_entropy",
    "fused_cross_entropy_setting",
    "fused_linear_cross_entropy",
    "last_layer_at",
    "linear_schedule",
    "pack",
    "pack_bins",
    "pack_rows",
    "sft_loss",
    "stack_budget",
    "stack_refusal",
    "train",
    "train_arms",
    "train_sft",
    "whole_last_layer",
]
