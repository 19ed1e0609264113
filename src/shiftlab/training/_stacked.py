"""Several arms of one organism trained in one step, their LoRA adapters stacked.

Every arm's micro-batch shares one forward pass through the frozen base: the base's matrix
products run once over all the arms' rows, and each LoRA layer multiplies arm ``k``'s rows
by arm ``k``'s own ``A`` and ``B`` (a batched matrix product). The arms share nothing
trainable, so one backward pass of the sum of their losses (each divided by its own step's
target tokens) gives every arm the gradient it would get alone; clipping is per arm, and
AdamW is elementwise, so one optimiser over the stacked tensors steps each arm as its own
optimiser would. A stacked arm therefore follows the same trajectory as the arm trained
alone, up to float rounding (the products run in other shapes).

On a small model a step is mostly per-operation overhead, which stacking pays once for all
the arms; on a large one it buys little and multiplies the activations held, so arms are
stacked only up to a budget of tokens and of activation memory (:func:`stack_budget`). Measured
on SmolLM2-135M (5 arms, micro-batches of 8 x 384 tokens, one thread): alone 219 s and 8.4 GB
peak, two at a time 270 s and 16.9 GB; the budget keeps its arms apart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import polars as pl
import torch
from tqdm.auto import tqdm

from shiftlab._last_layer import row_wise
from shiftlab._logits import unwrap
from shiftlab.chat import EncodedExample, collate
from shiftlab.models import exact_scaling, low_rank_scaled_linear
from shiftlab.spec import TrainingSpec
from shiftlab.training._encoding import Encoded, data_order
from shiftlab.training._loop import LOG_SCHEMA, _adamw, _resolve, _trainable, linear_schedule
from shiftlab.training._losses import sft_losses
from shiftlab.training._packing import pack_bins, pack_rows
from shiftlab.training._throughput import Throughput

# A stack's largest micro-batch holds at most this many tokens (rows x width, all arms)...
STACK_TOKENS = 8192
# ... and at most this many bytes of estimated activations (:func:`stack_budget`).
STACK_BYTES = 256 * 2**20
# Bump when how arms are grouped or stacked changes their numbers (run ids include it).
ARMS_VERSION = 2

# Attention and hidden dropout applied functionally, named by the model's config.
_DROPOUT_KEYS = (
    "attention_dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop", "hidden_dropout",
    "hidden_dropout_prob", "attention_probs_dropout_prob",
)  # fmt: skip
Rows = list[list[EncodedExample]]  # a micro-batch's packed rows
Bins = list[list[Rows]]  # per step, per micro-batch


@dataclass
class _StackedLayer:
    """One LoRA layer's adapter and the arms' stacked copies of it."""

    layer: Any
    a: torch.nn.Parameter  # the adapter's own A and B: (r, in), (out, r)
    b: torch.nn.Parameter
    a_stack: torch.nn.Parameter  # (arms, r, in), (arms, out, r)
    b_stack: torch.nn.Parameter
    scaling: float

    rows: list[int]  # the stacked batch's row count, shared by every layer and set per micro

    @row_wise
    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        # Rows come grouped by arm, arm k's rows the k-th equal slice of the batch; a layer
        # fed anything else (positions selected across rows, routed tokens) would mix the
        # arms; rows of selected positions (``last_layer_at``) keep them apart.
        if x.dim() < 3 or x.shape[0] != self.rows[0]:
            raise RuntimeError(f"a stacked LoRA layer got input of shape {tuple(x.shape)}")
        result: torch.Tensor = self.layer.base_layer(x, *args, **kwargs)
        rows = x.to(self.a_stack.dtype).reshape(self.a_stack.shape[0], -1, x.shape[-1])
        low = torch.bmm(rows, self.a_stack.transpose(1, 2))
        if exact_scaling(self.scaling):  # the same bits, r values scaled a token (models)
            update = torch.bmm(low * self.scaling, self.b_stack.transpose(1, 2))
        else:
            update = torch.bmm(low, self.b_stack.transpose(1, 2)) * self.scaling
        # Added before rounding to the base's dtype, as peft adds it.
        return (result + update.reshape(result.shape)).to(result.dtype)


def _lora_layers(model: Any) -> list[tuple[Any, str]] | str:
    """Every LoRA layer with the adapter it runs, or why the model's adapter cannot stack."""
    from peft.tuners.lora import Linear, LoraLayer

    base = unwrap(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    found = []
    for name, module in model.named_modules():
        # Dropout would draw every arm's masks from one stream, not from each arm's seed.
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0:
            return f"{name} is a dropout layer"
        if not isinstance(module, LoraLayer):
            continue
        if module is head:
            return "the output head has a LoRA adapter (it sees selected positions, not rows)"
        if "forward" in vars(module) or hasattr(module, "_hf_hook"):
            return f"{name}'s forward is already wrapped"
        if type(module) not in (Linear, low_rank_scaled_linear()):
            return f"{name} is a {type(module).__name__}, not a plain LoRA linear layer"
        if len(module.active_adapters) != 1 or module.merged or module.disable_adapters:
            return f"{name} does not run exactly one unmerged adapter"
        adapter = module.active_adapters[0]
        dropout = module.lora_dropout[adapter]
        if adapter in getattr(module, "lora_variant", {}) or module.use_dora.get(adapter):
            return f"{name} is a LoRA variant (DoRA or another)"
        if module.lora_B[adapter].bias is not None:
            return f"{name}'s LoRA has a bias"
        if not isinstance(dropout, torch.nn.Identity) and getattr(dropout, "p", 1.0) > 0:
            return f"{name} has LoRA dropout"
        if not (
            module.lora_A[adapter].weight.requires_grad
            and module.lora_B[adapter].weight.requires_grad
        ):
            return f"{name} freezes part of its LoRA adapter"
        found.append((module, adapter))
    if not found:
        return "the model has no LoRA layers"
    adapter_params = {
        id(p) for m, a in found for p in (m.lora_A[a].weight, m.lora_B[a].weight)
    }  # fmt: skip
    if any(id(p) not in adapter_params for p in _trainable(model).values()):
        return "the model trains parameters outside its LoRA layers"
    return found


def stack_refusal(model: Any, objectives: Sequence[str], config: TrainingSpec) -> str | None:
    """Why arms of ``objectives`` cannot be stacked on ``model`` under ``config``; None
    when they can (plain LoRA, SFT, one process, no checkpoints)."""
    from accelerate import PartialState

    if any(o != "sft" for o in objectives):
        return "only SFT arms stack"
    if config.checkpoint_every or config.gradient_checkpointing:
        return "a checkpointed run trains alone"
    if PartialState().num_processes > 1:
        return "distributed training runs arms one by one"
    config_of = unwrap(model).config
    dropped = [k for k in _DROPOUT_KEYS if (getattr(config_of, k, 0) or 0) > 0]
    if dropped:
        return f"the model drops out ({', '.join(dropped)})"
    attention = str(getattr(config_of, "_attn_implementation", ""))
    if attention.startswith("flash") and config.packing != "none":
        return "flash attention keeps packed examples apart only in a single row"
    layers = _lora_layers(model)
    return layers if isinstance(layers, str) else None


def activation_bytes_per_token(model: Any, width: int) -> int:
    """Estimated bytes a training step holds for backward per token, in rows of ``width``
    tokens: per layer, ten hidden-sized and four MLP-sized tensors and two attention-score
    rows per head, in the parameters' dtype. A rough estimate, not a bound: measured on
    SmolLM2-135M at width 384 (peak RSS less the loaded model, over the micro-batch's
    tokens), 2.57 MB against 2.26 estimated.

    >>> from shiftlab.models import build_tiny_llama
    >>> activation_bytes_per_token(build_tiny_llama(64), 64) > 0
    True
    """
    config = unwrap(model).config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(config.hidden_size)
    mlp = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
    heads = int(config.num_attention_heads)
    per_layer = 10 * hidden + 4 * int(mlp or 4 * hidden) + 2 * heads * width
    element = next(unwrap(model).parameters()).element_size()
    return int(config.num_hidden_layers) * per_layer * element


def stack_budget(model: Any, width: int) -> int:
    """Tokens a stack's largest micro-batch may hold on ``model`` in rows of at most
    ``width`` tokens: :data:`STACK_TOKENS`, or fewer where their activations
    (:func:`activation_bytes_per_token`) would pass :data:`STACK_BYTES`. A toyworld model
    stacks 8,192 tokens; SmolLM2-135M about a hundred, so its arms train alone (an arm
    larger than the budget does).

    >>> from shiftlab.models import build_tiny_llama
    >>> stack_budget(build_tiny_llama(64), 64)
    8192
    """
    return min(STACK_TOKENS, STACK_BYTES // activation_bytes_per_token(model, width))


@dataclass(frozen=True)
class ArmPlan:
    """An arm ready to stack: its SFT data, its data order (as :func:`train` draws it from
    the arm's seed) and each step's micro-batches as packed rows."""

    name: str
    data: Sequence[Encoded]
    order: list[list[int]]
    bins: Bins

    @classmethod
    def of(cls, name: str, data: Sequence[Encoded], config: TrainingSpec, seed: int) -> ArmPlan:
        if not data:
            raise ValueError(f"arm {name}: training needs at least one example")
        order = data_order(len(data), config.steps, config.batch_size, seed)
        size = config.micro_batch_size_or_batch
        bins: Bins = []
        for indices in order:
            examples = [cast(EncodedExample, data[i]) for i in indices]
            micros = [examples[i : i + size] for i in range(0, len(examples), size)]
            bins.append([pack_bins(m, config.packing, config.max_length) for m in micros])
        return cls(name, data, order, bins)

    @property
    def widest_row(self) -> int:
        """Tokens in the arm's longest packed row."""
        return max(sum(len(e.input_ids) for e in row) for step in self.bins for rows in step
                   for row in rows)  # fmt: skip

    @property
    def largest_micro_tokens(self) -> int:
        """Rows x width of the arm's largest packed micro-batch."""
        return max(
            len(rows) * max(sum(len(e.input_ids) for e in row) for row in rows)
            for step in self.bins
            for rows in step
        )


def train_stacked(
    model: Any,
    tokenizer: Any,
    arms: Sequence[ArmPlan],
    config: TrainingSpec,
    *,
    progress: bool = True,
) -> tuple[dict[str, pl.DataFrame], dict[str, dict[int, torch.Tensor]]]:
    """Train ``arms`` (planned under ``config``) together from ``model``'s adapter as it is now.

    Returns each arm's log (:func:`train`'s columns; ``seconds`` and ``tokens_per_second``
    are those of the shared step) and its trained adapter, keyed by ``id`` of each trainable
    parameter, for the caller to copy in. ``model``'s own adapter is left as it was.
    :func:`stack_refusal` must have returned None for this model and config.
    """
    from accelerate import Accelerator

    device = Accelerator(cpu=not torch.cuda.is_available()).device
    config = _resolve(config, model, device)
    model.to(device)
    layers_found = _lora_layers(model)
    assert not isinstance(layers_found, str), layers_found
    k = len(arms)
    stacked = []
    rows_now = [0]
    for module, adapter in layers_found:
        a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
        stacked.append(
            _StackedLayer(
                module, a, b,
                torch.nn.Parameter(a.detach().unsqueeze(0).repeat(k, 1, 1)),
                torch.nn.Parameter(b.detach().unsqueeze(0).repeat(k, 1, 1)),
                float(module.scaling[adapter]),
                rows_now,
            )
        )  # fmt: skip
    params = [p for s in stacked for p in (s.a_stack, s.b_stack)]
    optimiser = _adamw(params, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, linear_schedule(config.warmup_steps, config.steps)
    )
    throughput = Throughput(model, device, paired=False)
    bf16 = config.mixed_precision == "bf16"
    rows: list[list[dict[str, Any]]] = [[] for _ in arms]
    for s in stacked:
        s.layer.forward = s.forward
    model.train()
    try:
        for step in tqdm(range(config.steps), desc="arms", disable=not progress, leave=False):
            started = time.perf_counter()
            examples = [[arm.data[i] for i in arm.order[step]] for arm in arms]
            n_tokens = [sum(e.n_target_tokens for e in x) for x in examples]
            step_loss = torch.zeros(k, dtype=torch.float64, device=device)
            for micro in range(len(arms[0].bins[step])):
                arm_rows = [arm.bins[step][micro] for arm in arms]
                height = max(len(r) for r in arm_rows)
                if config.packing == "none":  # one example a row, as many rows in every arm
                    batch = collate([row[0] for r in arm_rows for row in r], tokenizer.pad_token_id)
                else:  # an arm with fewer rows gets empty ones (a padding segment each)
                    batch = pack_rows(
                        [row for r in arm_rows for row in [*r, *[[]] * (height - len(r))]],
                        tokenizer.pad_token_id,
                    )
                groups = [slice(i * height, (i + 1) * height) for i in range(k)]
                rows_now[0] = k * height
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    losses = sft_losses(model, {n: t.to(device) for n, t in batch.items()}, groups)
                pairs = list(zip(losses, n_tokens, strict=True))
                cast(torch.Tensor, sum(loss / max(n, 1) for (loss, _), n in pairs)).backward()
                # Summed in float64, as the lone loop logs it.
                step_loss += torch.stack(
                    [loss.detach().double() / max(n, 1) for (loss, _), n in pairs]
                )
            grad_norms = _clip_per_arm(params, k, config.max_grad_norm)
            bad = [arms[i].name for i in range(k) if not torch.isfinite(grad_norms[i])]
            if bad:
                raise FloatingPointError(
                    f"arm {', '.join(bad)}: non-finite gradient norm at step {step}; "
                    "lower the learning rate"
                )
            lr = scheduler.get_last_lr()[0]
            optimiser.step()
            scheduler.step()
            optimiser.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - started
            rate = throughput.measure(sum(e.n_input_tokens for x in examples for e in x), seconds)
            for i in range(k):
                rows[i].append(
                    {
                        "step": step,
                        "loss": float(step_loss[i]),
                        "grad_norm": float(grad_norms[i]),
                        "lr": lr,
                        "n_tokens": n_tokens[i],
                        "seconds": seconds,
                        **rate,
                        "examples": arms[i].order[step],
                    }
                )
    finally:
        for s in stacked:
            del s.layer.forward
        model.eval()
    weights = {
        arm.name: {
            **{id(s.a): s.a_stack[i].detach().clone() for s in stacked},
            **{id(s.b): s.b_stack[i].detach().clone() for s in stacked},
        }
        for i, arm in enumerate(arms)
    }
    logs = {arm.name: pl.DataFrame(r, schema=LOG_SCHEMA) for arm, r in zip(arms, rows, strict=True)}
    return logs, weights


@torch.no_grad()
def _clip_per_arm(params: list[torch.nn.Parameter], k: int, max_norm: float) -> torch.Tensor:
    """Clip each arm's gradient (its slice of every stacked tensor) to ``max_norm`` as
    ``clip_grad_norm_`` would clip it alone; each arm's norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    squares = torch.stack([g.reshape(k, -1).pow(2).sum(1) for g in grads]).sum(0)
    norms = squares.sqrt()
    factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(factor.view(k, *([1] * (g.dim() - 1))).to(g.dtype))
    return norms
