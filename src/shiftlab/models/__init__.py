"""Models: loading (registered sources such as toyworld, local folders, GGUF, hub ids),
tiny models and LoRA adapters."""

from shiftlab.models._loading import (
    MODEL_SOURCES,
    SMOLLM2_HUB_ID,
    ModelRef,
    ModelSource,
    load_causal_lm,
    model_identity,
    resolve_model,
    save_model_dir,
    smollm2_folder,
)
from shiftlab.models._lora import (
    attach_lora,
    exact_scaling,
    load_lora,
    low_rank_scaled_linear,
    scale_low_rank,
)
from shiftlab.models._tiny import TINY_SIZES, build_tiny_llama

__all__ = [
    "MODEL_SOURCES",
    "SMOLLM2_HUB_ID",
    "TINY_SIZES",
    "ModelRef",
    "ModelSource",
    "attach_lora",
    "build_tiny_llama",
    "exact_scaling",
    "load_causal_lm",
    "load_lora",
    "low_rank_scaled_linear",
    "model_identity",
    "resolve_model",
    "save_model_dir",
    "scale_low_rank",
    "smollm2_folder",
]
