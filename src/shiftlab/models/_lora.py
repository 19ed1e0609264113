"""LoRA adapters (peft) on any causal LM."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from shiftlab._weights import require_safetensors
from shiftlab.errors import ModelError
from shiftlab.spec import LoraSpec


def attach_lora(model: Any, lora: LoraSpec | None = None, *, seed: int = 0) -> Any:
    """Wrap ``model`` in a fresh peft LoRA adapter; only the adapter is trainable.

    Targets all linear layers by default (peft's ``"all-linear"``, which skips the output
    head). The adapter's random init is seeded so an organism is a function of its seed.

    >>> from shiftlab.models import build_tiny_llama
    >>> peft_model = attach_lora(build_tiny_llama(64))
    >>> 0 < sum(p.numel() for p in peft_model.parameters() if p.requires_grad) < 100_000
    True
    """
    import torch
    from peft import LoraConfig, get_peft_model

    lora = lora or LoraSpec()
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft calls a transformers API that transformers 5 deprecates; not ours to fix.
        warnings.simplefilter("ignore", FutureWarning)
        torch.manual_seed(seed)
        try:
            return get_peft_model(model, config)
        except ValueError as error:
            raise ModelError(f"lora: {str(error).splitlines()[0]}") from None


def load_lora(model: Any, adapter_dir: str, *, trainable: bool = False) -> Any:
    """Attach a saved adapter to ``model`` (``model`` is modified in place by peft)."""
    from peft import PeftModel

    require_safetensors(adapter_dir, "adapter")
    if not (Path(adapter_dir) / "adapter_model.safetensors").is_file():
        raise ModelError(f"adapter {adapter_dir}: no adapter_model.safetensors")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable)
