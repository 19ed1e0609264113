"""Fused linear cross-entropy: the output head and its loss in one pass, chunk by chunk.

The plain SFT loss projects every target position through the output head, keeps the
``(targets, vocab)`` logits (and their log-softmax) for the backward pass, and computes
the head's gradients there; with a 50k vocabulary that is the largest tensor of a small
model's step. The chunked plain path bounds the memory by recomputing each chunk's logits
in the backward pass (one more head GEMM). This one does neither: in the forward pass,
chunk by chunk, it forms the logits, the loss, and at once the gradient of the summed loss
with respect to the logits (``softmax - onehot``), pushes it through the head (the
hidden states' gradient, and the weight's when the head is trainable), and drops the
chunk. The backward pass only scales the stored gradients by the incoming scalar. The same
algorithm as Liger-Kernel's ``FusedLinearCrossEntropy`` on GPU, written in plain torch so it
runs on CPU and GPU alike.

Under autocast the head's GEMMs run in the autocast dtype and the softmax in float32, as
autocast would run ``F.cross_entropy(head(h).float(), ...)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch

# Logits (rows x vocab) formed at once: 2^24 float32 values, 64 MiB. The head's GEMMs need
# a few hundred rows to run at full rate: on SmolLM2's 49,152-token head, 430 rows forward
# and backward took 449 ms in chunks of 85 rows (2^22) and 348 ms in chunks of 341.
CHUNK_LOGITS = 1 << 24

# Bump when the fused path's numbers change; study artefacts trained through it are keyed
# by it. 2: chunks of 2^24 logits (gradients move by float32 rounding).
FUSED_CE_VERSION = 2

# True: always fused; False: never; None (the default): fused where the plain path would
# split the logits into chunks and recompute each in the backward pass (large vocabularies).
_SETTING: ContextVar[bool | None] = ContextVar("shiftlab_fused_cross_entropy", default=None)


@contextmanager
def fused_cross_entropy(enabled: bool | None = True) -> Iterator[None]:
    """Within the block, :func:`~shiftlab.training.sft_loss` uses the fused head and loss
    wherever the head is a plain ``nn.Linear`` (``True``), never (``False``), or as by
    default (``None``): where the logits of a micro-batch would exceed the plain path's
    chunk (a real model's vocabulary), which the fused path replaces, and not for small
    vocabularies (toyworld), whose training it would change only by rounding but whose
    shipped base weights are keyed by the trainer's version.

    >>> from shiftlab.training import fused_cross_entropy_setting
    >>> with fused_cross_entropy():
    ...     fused_cross_entropy_setting()
    True
    >>> fused_cross_entropy_setting() is None
    True
    """
    token = _SETTING.set(enabled)
    try:
        yield
    finally:
        _SETTING.reset(token)


def fused_cross_entropy_setting() -> bool | None:
    """The :func:`fused_cross_entropy` setting in this context (None: the default)."""
    return _SETTING.get()


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        rows: int,
    ) -> torch.Tensor:
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        want_bias = bias is not None and ctx.needs_input_grad[2]
        dtype = _compute_dtype(hidden, weight)
        # The softmax runs in float32 at least (float64 stays float64).
        softmax_dtype = torch.promote_types(dtype, torch.float32)
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            loss = torch.zeros((), dtype=softmax_dtype, device=hidden.device)
            grad_hidden = torch.empty_like(hidden) if want_hidden else None
            # The weight's gradient sums over every chunk: accumulated in float32 at least.
            grad_weight = (
                torch.zeros(weight.shape, dtype=softmax_dtype, device=weight.device)
                if want_weight
                else None
            )
            grad_bias = (
                torch.zeros(bias.shape, dtype=softmax_dtype, device=bias.device)
                if want_bias and bias is not None
                else None
            )
            for start in range(0, h.shape[0], rows):
                chunk = slice(start, start + rows)
                hc, tc = h[chunk], targets[chunk]
                logits = hc @ w.T if b is None else torch.addmm(b, hc, w.T)
                logits = logits.to(softmax_dtype)
                picked = logits.gather(1, tc[:, None]).squeeze(1)
                peak = logits.amax(1, keepdim=True)
                # logits becomes exp(logits - max) in place, then the softmax.
                exp = logits.sub_(peak).exp_()
                total = exp.sum(1, keepdim=True)
                loss += (peak.squeeze(1) + total.squeeze(1).log() - picked).sum()
                if not (want_hidden or want_weight or want_bias):
                    continue
                grad = exp.div_(total)
                grad[torch.arange(grad.shape[0], device=grad.device), tc] -= 1.0
                g = grad.to(dtype)
                if grad_hidden is not None:
                    grad_hidden[chunk] = g @ w
                if grad_weight is not None:
                    grad_weight.addmm_(g.T.to(softmax_dtype), hc.to(softmax_dtype))
                if grad_bias is not None:
                    grad_bias += grad.sum(0)
        ctx.save_for_backward(
            *(t if t is not None else torch.empty(0) for t in (grad_hidden, grad_weight, grad_bias))
        )
        ctx.present = (grad_hidden is not None, grad_weight is not None, grad_bias is not None)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        grads: list[torch.Tensor | None] = []
        for tensor, present, dtype in zip(saved, ctx.present, ctx.dtypes, strict=True):
            grads.append((tensor * grad_output).to(dtype) if present else None)
        return grads[0], grads[1], grads[2], None, None


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    chunk_logits: int = CHUNK_LOGITS,
) -> torch.Tensor:
    """Summed cross-entropy of ``hidden @ weight.T (+ bias)`` against ``targets``, without
    ever holding more than ``chunk_logits`` logits; its gradients (for ``hidden``, and for
    ``weight`` and ``bias`` where they require grad) are formed in this call.

    >>> import torch
    >>> torch.manual_seed(0) is not None
    True
    >>> h = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    >>> w = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    >>> t = torch.tensor([0, 3, 6, 2, 2])
    >>> ours = fused_linear_cross_entropy(h, w, t, chunk_logits=14)  # two rows a chunk
    >>> plain = torch.nn.functional.cross_entropy(h @ w.T, t, reduction="sum")
    >>> bool(torch.isclose(ours, plain, rtol=1e-12))
    True
    """
    rows = max(1, chunk_logits // weight.shape[0])
    loss: torch.Tensor = _FusedLinearCrossEntropy.apply(hidden, weight, bias, targets, rows)
    return loss
