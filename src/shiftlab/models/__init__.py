"""Models: loading (toyworld, local folder, GGUF, hub id), tiny models and LoRA adapters."""

from shiftlab.models._loading import (
    SMOLLM2_HUB_ID,
    ModelRef,
    load_causal_lm,
    model_identity,
    resolve_model,
    save_model_dir,
    smollm2_folder,
)
from shiftlab.models._lora import attach_lora, load_lora
from shiftlab.models._tiny import TINY_SIZES, build_tiny_llama

__all__ = [
    "SMOLLM2_HUB_ID",
    "TINY_SIZES",
    "ModelRef",
    "attach_lora",
    "build_tiny_llama",
    "load_causal_lm",
    "load_lora",
    "model_identity",
    "resolve_model",
    "save_model_dir",
    "smollm2_folder",
]
