"""Training objectives. Each returns ``(sum of per-token losses, number of tokens)``.

The loop divides by the number of target tokens of the whole optimiser step, so micro-
batching and packing do not change the loss.

The paired losses compare the model on a wrapped prompt with a *teacher* on the clean
prompt. The teacher is given as a context manager under which the model acts as the
teacher; the training loop passes :class:`FrozenTeacher`, the weights as they were when
training began (the organism), because a teacher that moves with the student lets both
collapse onto one prompt-independent output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from shiftlab._logits import full_logits, hidden_at, logits_at, model_inputs, split_head, unwrap
from shiftlab.chat import IGNORE_INDEX
from shiftlab.training._fused_ce import fused_cross_entropy_setting, fused_linear_cross_entropy


def _run_decoder(model: Any, batch: dict[str, torch.Tensor]) -> None:
    """Run the decoder stack (for its hooks), skipping the output head where possible."""
    parts = split_head(model)
    if parts is None:
        full_logits(model, batch)
    else:
        parts[0](**model_inputs(batch), use_cache=False)


def _target_positions(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mask of target-token positions."""
    return batch["labels"] != IGNORE_INDEX


def _predicting(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mask of positions whose next token is a target."""
    return F.pad(_target_positions(batch)[:, 1:], (0, 1))


def _full_precision(values: torch.Tensor) -> torch.Tensor:
    """Half-precision values in float32 for the loss; float32 and float64 as they are."""
    return values if values.dtype in (torch.float32, torch.float64) else values.float()


# Above this many logits (positions x vocabulary) the loss is computed in chunks.
CHUNKED_LOGITS = 1 << 22


def _head_cross_entropy(head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(_full_precision(head(hidden)), targets, reduction="sum")


def sft_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over target tokens (prompt and padding count nothing).

    With a large vocabulary the logits, their log-softmax and its gradient (three
    ``(targets, vocab)`` tensors, at the moment every activation is held) must never exist
    whole. A plain linear head then runs fused with the loss (see
    :func:`fused_cross_entropy`, which also turns it on or off everywhere): the head's
    gradients are formed chunk by chunk in the forward pass, with no logits kept and no
    head recomputed. Any other head runs over chunks of target positions, each recomputed
    in the backward pass.
    """
    return sft_losses(model, batch, [slice(None)])[0]


def sft_losses(
    model: Any, batch: dict[str, torch.Tensor], groups: Sequence[slice]
) -> list[tuple[torch.Tensor, int]]:
    """:func:`sft_loss` of each group of the batch's rows, from one forward pass over all
    of them: the head and the loss run group by group, each choosing its path (fused,
    whole or chunked) by its own size, as it would alone."""
    at = _predicting(batch)
    labels = batch["labels"][:, 1:]
    parts = split_head(model)
    if parts is None:
        logits = full_logits(model, batch)
        return [
            (
                F.cross_entropy(
                    _full_precision(logits[g][at[g]]), labels[g][at[g, :-1]], reduction="sum"
                ),
                int(at[g].sum()),
            )
            for g in groups
        ]
    decoder, head = parts
    hidden = hidden_at(decoder, batch, at)
    spans = [range(len(at))[g] for g in groups]
    if any(span.step != 1 for span in spans if len(span) > 1):
        raise ValueError("sft_losses groups must be contiguous slices of rows")
    if len(spans) == 1 and len(spans[0]) == len(at):  # one group of every row
        return [_head_loss(head, hidden, labels[at[:, :-1]])]
    # Row r's positions are rows[r]:rows[r + 1] of ``hidden``, which holds them row by row.
    rows = [0, *at.sum(1).cumsum(0).tolist()]
    return [
        _head_loss(head, hidden[rows[s.start] : rows[s.start + len(s)]], labels[g][at[g, :-1]])
        for g, s in zip(groups, spans, strict=True)
    ]


def _head_loss(head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of ``head(hidden)`` against ``targets`` (see :func:`sft_loss`)."""
    vocab = head.weight.shape[0]
    setting = fused_cross_entropy_setting()
    large = targets.numel() * vocab > CHUNKED_LOGITS
    if type(head) is torch.nn.Linear and (setting or (setting is None and large)):
        # The head's gradients are formed in this forward pass (see ``_fused_ce``).
        return fused_linear_cross_entropy(hidden, head.weight, targets, head.bias), int(
            targets.numel()
        )
    if not large:
        return _head_cross_entropy(head, hidden, targets), int(targets.numel())
    size = max(1, CHUNKED_LOGITS // vocab)
    loss_sum = sum(
        checkpoint(_head_cross_entropy, head, h, t, use_reentrant=False)
        for h, t in zip(hidden.split(size), targets.split(size), strict=True)
    )
    return cast(torch.Tensor, loss_sum), int(targets.numel())


Teacher = Callable[[], AbstractContextManager[Any]]


class FrozenTeacher:
    """The trainable weights as they are now, swapped in on demand (no copies per use).

    >>> import torch
    >>> layer = torch.nn.Linear(2, 2)
    >>> with torch.no_grad():  # zeros and ones, so the comparison below is exact
    ...     _ = layer.weight.zero_()
    >>> teacher = FrozenTeacher({"w": layer.weight})
    >>> with torch.no_grad():
    ...     _ = layer.weight.add_(1.0)
    >>> with teacher():
    ...     frozen = layer.weight.clone()
    >>> bool((frozen == 0).all()), bool((layer.weight == 1).all())
    (True, True)
    """

    def __init__(self, params: dict[str, torch.nn.Parameter]) -> None:
        self._params = params
        self._frozen = {name: p.detach().clone() for name, p in params.items()}

    @contextmanager
    def __call__(self) -> Iterator[None]:
        current = {name: p.data for name, p in self._params.items()}
        # Autocast caches low-precision copies of weights keyed by the parameter object,
        # which a swap of ``.data`` keeps: clear it on the way in and out.
        torch.clear_autocast_cache()
        try:
            for name, p in self._params.items():
                p.data = self._frozen[name]
            yield
        finally:
            for name, p in self._params.items():
                p.data = current[name]
            torch.clear_autocast_cache()


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _paired_positions(
    clean: dict[str, torch.Tensor],
    wrapped: dict[str, torch.Tensor],
    positions: Callable[[dict[str, torch.Tensor]], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss positions of both sides, checked to pair up row by row."""
    clean_at, wrapped_at = positions(clean), positions(wrapped)
    if not torch.equal(clean_at.sum(1), wrapped_at.sum(1)):
        raise ValueError("clean and wrapped rows must share the same target suffix")
    return clean_at, wrapped_at


@contextmanager
def _as_teacher(model: Any, teacher: Teacher) -> Iterator[None]:
    """The clean side's pass: no gradient, eval mode, the teacher's weights."""
    with torch.no_grad(), _eval_mode(model), teacher():
        yield


def bct_loss(
    model: Any,
    clean: dict[str, torch.Tensor],
    wrapped: dict[str, torch.Tensor],
    temperature: float,
    teacher: Teacher = nullcontext,
) -> tuple[torch.Tensor, int]:
    """Soft-label consistency: KL(clean ‖ wrapped) of next-token distributions over the suffix.

    The teacher's distribution on the clean prompt is computed in eval mode without
    gradient and softened by ``temperature``; the per-token KL is scaled by
    ``temperature**2``.
    """
    clean_at, wrapped_at = _paired_positions(clean, wrapped, _predicting)
    with _as_teacher(model, teacher):
        target = (_full_precision(logits_at(model, clean, clean_at)) / temperature).log_softmax(-1)
    student = (_full_precision(logits_at(model, wrapped, wrapped_at)) / temperature).log_softmax(-1)
    kl = F.kl_div(student, target, log_target=True, reduction="sum")
    return kl * temperature**2, int(clean_at.sum())


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The decoder-layer list of a causal LM (DDP- or peft-wrapped or not)."""
    base = unwrap(model)
    n_layers = base.config.num_hidden_layers
    for module in base.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            return module
    raise ValueError(f"no list of {n_layers} decoder layers found in {type(base).__name__}")


@contextmanager
def _capture(layers: torch.nn.ModuleList) -> Iterator[list[torch.Tensor]]:
    captured: list[torch.Tensor] = []

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def act_loss(
    model: Any,
    clean: dict[str, torch.Tensor],
    wrapped: dict[str, torch.Tensor],
    scale: float,
    teacher: Teacher = nullcontext,
) -> tuple[torch.Tensor, int]:
    """Activation consistency: squared distance of every decoder layer's residual stream.

    Over the suffix tokens themselves (BCT uses the positions that *predict* them), wrapped
    activations are pulled toward a stop-gradient copy of the teacher's on the clean prompt
    (eval mode); per token, the mean over hidden units is averaged over layers and
    multiplied by ``scale``.
    """
    clean_at, wrapped_at = _paired_positions(clean, wrapped, _target_positions)
    layers = decoder_layers(model)
    with _as_teacher(model, teacher), _capture(layers) as targets:
        _run_decoder(model, clean)
    with _capture(layers) as states:
        _run_decoder(model, wrapped)
    per_token = torch.stack(
        [
            (_full_precision(state[wrapped_at]) - _full_precision(target[clean_at])).pow(2).mean(-1)
            for state, target in zip(states, targets, strict=True)
        ]
    ).mean(0)
    return per_token.sum() * scale, int(clean_at.sum())
