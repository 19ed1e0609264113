"""How fast a step ran: input tokens per second and, on a GPU, model-FLOPs utilisation."""

from __future__ import annotations

from typing import Any

import torch

# Dense bf16 peak FLOP/s by device-name fragment, for model-FLOPs utilisation.
_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


class Throughput:
    """Measures each step of one run: ``tokens_per_second`` over input tokens, and ``mfu``
    (GPU only, None elsewhere or on an unknown device) from the FLOPs a token costs.

    Per token: 2N forward, 2N backward through activations, 2N_trainable for weight
    gradients, plus another 2N for a paired objective's teacher pass. Input tokens count
    both sides of a pair, so the teacher is half of them.

    >>> from shiftlab.models import build_tiny_llama
    >>> Throughput(build_tiny_llama(64), torch.device("cpu"), paired=False).measure(100, 0.5)
    {'tokens_per_second': 200.0, 'mfu': None}
    """

    def __init__(self, model: Any, device: Any, *, paired: bool) -> None:
        self.budget: tuple[float, float] | None = None
        if getattr(device, "type", "cpu") != "cuda":
            return
        name = torch.cuda.get_device_name(device)
        peak = next((flops for key, flops in _PEAK_FLOPS.items() if key in name), None)
        if peak is None:
            return
        n_all = sum(p.numel() for p in model.parameters())
        n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        per_token = (3 * n_all + n_trainable) if paired else (4 * n_all + 2 * n_trainable)
        self.budget = float(per_token), peak

    def measure(self, input_tokens: int, seconds: float) -> dict[str, float | None]:
        """The step's log columns."""
        rate = input_tokens / seconds
        mfu = self.budget[0] * rate / self.budget[1] if self.budget else None
        return {"tokens_per_second": rate, "mfu": mfu}
