"""LoRA adapters (peft) on any causal LM."""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path
from typing import Any, cast

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
            return scale_low_rank(get_peft_model(model, config))
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
        return scale_low_rank(PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable))


def exact_scaling(scaling: float) -> bool:
    """Whether multiplying by ``scaling`` commutes with float rounding: a power of two of at
    least 1 (scaling each term of a float sum by one scales every rounding by it exactly;
    a power below 1 could round subnormals)."""
    return scaling >= 1 and math.frexp(scaling)[0] == 0.5


@functools.cache
def low_rank_scaled_linear() -> type:
    """peft's LoRA ``Linear`` with the scaling applied to the rank-r activations instead of
    the layer's output: ``base(x) + B((A x) s)`` for peft's ``base(x) + B(A x) s``. Where
    the scaling is exact (:func:`exact_scaling`, as shiftlab's default alpha = 2r is) the
    two are equal bit for bit (short of products below float's normal range, ~1e-38), and
    this one multiplies r values a token instead of the layer's width, forward and
    backward. Anything else (several or merged adapters, dropout, a variant, a LoRA bias,
    per-call arguments) runs peft's own forward. A plain layer can also fold its adapter
    into its weight while the model infers (:func:`shiftlab.generation.folded_adapters`)."""
    import torch
    from peft.tuners.lora import Linear

    class LowRankScaledLinear(Linear):
        # While the adapter is folded into the base weight (``fold``): its name and the
        # base's own weight, to put back.
        _unfolded: tuple[str, torch.Tensor] | None = None

        def _plain_adapter(self) -> str | None:
            """The one adapter this layer runs, where it is a plain one (else None)."""
            names = self.active_adapters
            name: str = names[0] if len(names) == 1 else ""
            if (
                name not in self.lora_A
                or self.disable_adapters
                or self.merged
                or name in self.lora_variant
                or not isinstance(self.lora_dropout[name], torch.nn.Identity)
                or self.lora_B[name].bias is not None
                or not exact_scaling(self.scaling[name])
            ):
                return None
            return name

        def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if self._unfolded is not None:
                self._check_still_folded(self._unfolded[0], args, kwargs)
                folded: torch.Tensor = self.base_layer(x)
                return folded
            name = self._plain_adapter()
            if args or kwargs or name is None or x.dtype != self.lora_A[name].weight.dtype:
                return super().forward(x, *args, **kwargs)
            result: torch.Tensor = self.base_layer(x)
            low = self.lora_A[name](x) * self.scaling[name]
            return (result + self.lora_B[name](low)).to(result.dtype)

        def fold_weight(self) -> torch.nn.Parameter | None:
            """The base weight that folding would replace; None where this layer cannot
            fold (not a plain adapter on a ``torch.nn.Linear`` of the adapter's dtype, or
            a forward replaced or hooked from outside)."""
            name = self._plain_adapter()
            weight = getattr(self.base_layer, "weight", None)
            if (
                self._unfolded is not None
                or name is None
                or type(self.base_layer) is not torch.nn.Linear
                or not isinstance(weight, torch.nn.Parameter)
                or weight.dtype != self.lora_A[name].weight.dtype
                or weight.device.type == "meta"
                or "forward" in vars(self)
                or hasattr(self, "_hf_hook")
                or hasattr(self.base_layer, "_hf_hook")
            ):
                return None
            return weight

        def fold(self) -> None:
            """Run the base weight plus ``B (s A)`` from now on, until :meth:`unfold`
            (``fold_weight`` must not be None)."""
            name = self._plain_adapter()
            weight = self.fold_weight()
            assert name is not None and weight is not None
            a = cast(torch.Tensor, self.lora_A[name].weight)
            b = cast(torch.Tensor, self.lora_B[name].weight)
            with torch.no_grad():
                folded = torch.addmm(weight.data, b, a * self.scaling[name])
            self._unfolded = (name, weight.data)
            weight.data = folded

        def unfold(self) -> None:
            """Put the base's own weight back (nothing when not folded)."""
            if self._unfolded is None:
                return
            name, original = self._unfolded
            cast(torch.nn.Parameter, self.base_layer.weight).data = original
            self._unfolded = None
            if self.merged:
                raise RuntimeError(
                    f"adapter {name!r} was merged while folded; its merge is lost with the "
                    "folded weight, so the base must be reloaded"
                )

        def _check_still_folded(
            self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> None:
            # A folded layer runs only the adapter it folded, on plain inputs, without
            # gradients: anything else would silently compute with the wrong weights.
            if args or kwargs or torch.is_grad_enabled() or self._plain_adapter() != name:
                raise RuntimeError(
                    "a folded LoRA layer was called with gradients on, extra arguments, or "
                    "another adapter state; change these outside folded_adapters"
                )

    return LowRankScaledLinear


def scale_low_rank(model: Any) -> Any:
    """``model`` with each of peft's plain LoRA ``Linear`` layers running
    :func:`low_rank_scaled_linear`'s forward (in place; the class is swapped, the weights,
    state dict and saved adapter are untouched).

    >>> from shiftlab.models import build_tiny_llama
    >>> model = attach_lora(build_tiny_llama(64))  # attach_lora and load_lora call it
    >>> sorted({type(m).__name__ for m in model.modules() if hasattr(m, "lora_A")})
    ['LowRankScaledLinear']
    """
    from peft.tuners.lora import Linear

    scaled = low_rank_scaled_linear()
    for module in model.modules():
        if type(module) is Linear:
            module.__class__ = scaled
    return model
