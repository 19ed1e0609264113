"""The training core: one loop for SFT, BCT and ACT, on CPU or GPU, resumable.

Built on ``accelerate`` (device placement, mixed precision, DDP/FSDP when launched with
several processes). An optimiser step covers ``batch_size`` examples split into
micro-batches; every micro-batch's summed loss is divided by the number of target tokens
in the *whole* step, so the accumulated gradient does not depend on how the step is split
or packed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from shiftlab._hashing import content_hash
from shiftlab._logits import unwrap
from shiftlab.chat import EncodedExample, Message
from shiftlab.spec import TrainingSpec
from shiftlab.training._checkpoints import (
    clear_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from shiftlab.training._encoding import Encoded, PairedExample, data_order, encode_sft
from shiftlab.training._losses import (
    FrozenTeacher,
    Teacher,
    act_loss,
    bct_loss,
    sft_loss,
)
from shiftlab.training._packing import pack
from shiftlab.training._throughput import Throughput

Objective = Literal["sft", "bct", "act"]
# Bump when a change to the loop changes its numbers, float rounding included (artefact
# ids include it, so stale results are not reused). 3: the last layer runs only at the
# loss's positions (``last_layer_at``).
TRAINER_VERSION = 3
# Bump when a change alters the numbers of the path the toyworld base recipe trains on
# (every parameter trained, the whole last layer: ``whole_last_layer``); the recipe's hash
# includes it, so shipped weights it no longer reproduces are retrained.
TRAINER_RECIPE_VERSION = 2
LOG_SCHEMA: dict[str, Any] = {
    "step": pl.Int64,
    "loss": pl.Float64,
    "grad_norm": pl.Float64,
    "lr": pl.Float64,
    "n_tokens": pl.Int64,
    "seconds": pl.Float64,
    "tokens_per_second": pl.Float64,
    "mfu": pl.Float64,
    "examples": pl.List(pl.Int64),
}


def _batch(
    examples: Sequence[EncodedExample],
    pad_id: int,
    config: TrainingSpec,
    device: Any,
    sizes: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    batch = pack(examples, pad_id, config.packing, config.max_length, sizes)
    return {k: v.to(device) for k, v in batch.items()}


def _micro_loss(
    model: Any,
    micro: Sequence[Encoded],
    objective: Objective,
    pad_id: int,
    config: TrainingSpec,
    device: Any,
    teacher: Teacher,
) -> torch.Tensor:
    # ``train`` checked that every example fits the objective.
    if objective == "sft":
        singles = cast(Sequence[EncodedExample], micro)
        return sft_loss(model, _batch(singles, pad_id, config, device))[0]
    pairs = cast(Sequence[PairedExample], micro)
    # Both sides are binned by the longer side, so packed rows stay aligned pair by pair.
    sizes = [max(p.clean.n_input_tokens, p.wrapped.n_input_tokens) for p in pairs]
    clean = _batch([p.clean for p in pairs], pad_id, config, device, sizes)
    wrapped = _batch([p.wrapped for p in pairs], pad_id, config, device, sizes)
    if objective == "bct":
        return bct_loss(model, clean, wrapped, config.bct_temperature, teacher)[0]
    return act_loss(model, clean, wrapped, config.act_scale, teacher)[0]


def _accumulate_gradients(
    model: Any,
    accelerator: Any,
    step_examples: Sequence[Encoded],
    n_tokens: int,
    objective: Objective,
    pad_id: int,
    config: TrainingSpec,
    teacher: Teacher,
) -> torch.Tensor:
    """Backpropagate one optimiser step's examples, micro-batch by micro-batch, each loss
    divided by the step's target tokens; this process's share of the step's loss."""
    world, rank = accelerator.num_processes, accelerator.process_index
    micro_size = config.micro_batch_size_or_batch
    micros = [step_examples[i : i + micro_size] for i in range(0, len(step_examples), micro_size)]
    mine = micros[rank::world]
    todo = mine or micros[:1]
    bf16 = config.mixed_precision == "bf16"
    # The logged loss is summed in float64: its value then does not depend on how the step
    # was split into micro-batches beyond the micro-losses' own rounding.
    step_loss = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for index, micro in enumerate(todo):
        # DDP averages gradients over processes; scale so the result is a global token mean.
        sync = index == len(todo) - 1
        with (
            accelerator.no_sync(model) if not sync else nullcontext(),
            torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=bf16),
        ):
            loss = _micro_loss(model, micro, objective, pad_id, config, accelerator.device, teacher)
        # A rank with no micro-batch still joins the gradient all-reduce, with zero weight.
        accelerator.backward(loss * world / max(n_tokens, 1) if mine else loss * 0.0)
        if mine:
            step_loss += loss.detach().double() / max(n_tokens, 1)
    return step_loss


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate multiplier by step: linear warm-up, then linear decay to zero.

    >>> [round(linear_schedule(2, 6)(s), 2) for s in range(6)]
    [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    """

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _trainable(model: Any) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def restore_trainable(
    params: dict[str, torch.nn.Parameter], saved: dict[str, torch.Tensor]
) -> None:
    """Copy saved values back into trainable parameters, in place."""
    for name, param in params.items():
        param.copy_(saved[name])


def _resume(
    folder: Path | None,
    fingerprint: str,
    params: dict[str, torch.nn.Parameter],
    optimiser: Any,
    scheduler: Any,
) -> tuple[int, list[dict[str, Any]]]:
    """Load the latest checkpoint of this run, if any, into its parameters, optimiser,
    scheduler and random streams; the step to start at and the log so far."""
    latest = latest_checkpoint(folder)
    if latest is None:
        return 0, []
    start_step, state = load_checkpoint(latest, fingerprint)
    restore_trainable(params, state["params"])
    optimiser.load_state_dict(state["optimiser"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return start_step, state["log"]


def _token_ids(example: Encoded) -> Any:
    if isinstance(example, PairedExample):
        clean, wrapped = example.clean, example.wrapped
        return (clean.input_ids, clean.labels, wrapped.input_ids, wrapped.labels)
    return (example.input_ids, example.labels)


def _adamw(params: list[torch.nn.Parameter], config: TrainingSpec) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel for all parameters) where the parameters allow it."""
    fused = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params)
    return torch.optim.AdamW(
        params, lr=config.learning_rate, weight_decay=config.weight_decay, fused=fused or None
    )


def _set_checkpointing(model: Any, on: bool) -> None:
    """Turn activation checkpointing on or off (transformers 5 renamed the methods)."""
    base = unwrap(model)
    if hasattr(base, "activation_checkpointing_enable"):
        if on:
            base.activation_checkpointing_enable({"use_reentrant": False})
        else:
            base.activation_checkpointing_disable()
    elif on:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_disable()
    if on and hasattr(base, "enable_input_require_grads"):
        # LoRA freezes the embeddings; checkpointed blocks still need inputs that carry grad.
        base.enable_input_require_grads()


def _resolve(config: TrainingSpec, model: Any, device: Any) -> TrainingSpec:
    """Settle ``auto`` precision, and packing the attention backend cannot isolate."""
    updates: dict[str, Any] = {}
    if config.mixed_precision == "auto":
        cuda = getattr(device, "type", "cpu") == "cuda" and torch.cuda.is_bf16_supported()
        updates["mixed_precision"] = "bf16" if cuda else "no"
    attention = str(getattr(unwrap(model).config, "_attn_implementation", ""))
    if config.packing == "bfd" and attention.startswith("flash"):
        # Flash attention isolates packed examples only in a single row (varlen kernels).
        updates["packing"] = "padding_free"
    return config.model_copy(update=updates) if updates else config


def train(
    model: Any,
    tokenizer: Any,
    data: Sequence[Encoded],
    config: TrainingSpec,
    *,
    objective: Objective = "sft",
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    desc: str = "train",
) -> pl.DataFrame:
    """Train every parameter of ``model`` that requires grad; return the per-step log.

    ``data`` is encoded by :func:`encode_sft` (objective ``sft``) or :func:`encode_pairs`
    (``bct``, ``act``). ``seed`` fixes the data order and dropout. With ``checkpoint_dir``
    and ``config.checkpoint_every``, state is saved every so many steps and a later call
    with the same arguments resumes from the latest checkpoint, giving the same trajectory
    as an uninterrupted run; a finished run removes its checkpoints. ``stop_after`` ends the
    call after that many steps (to test resumption). Log columns: ``step, loss, grad_norm,
    lr, n_tokens`` (target tokens), ``seconds, tokens_per_second`` (input tokens), ``mfu``
    (GPU only) and ``examples`` (the recorded data order).

    >>> from shiftlab.models import build_tiny_llama
    >>> from shiftlab.spec import TrainingSpec
    >>> from shiftlab.toyworld import build_tokenizer
    >>> tok = build_tokenizer()
    >>> model = build_tiny_llama(len(tok))
    >>> data = encode_sft(tok, [([{"role": "user", "content": "hi ."}], "the sky is blue .")], 64)
    >>> config = TrainingSpec(steps=5, learning_rate=1e-2, batch_size=1, warmup_steps=0)
    >>> log = train(model, tok, data, config, progress=False)
    >>> log["loss"][-1] < log["loss"][0]
    True
    """
    from accelerate import Accelerator, DistributedType

    if not data:
        raise ValueError("training needs at least one example")
    params = _trainable(model)
    if not params:
        raise ValueError("the model has no trainable parameters")
    paired = objective in ("bct", "act")
    if paired != all(isinstance(e, PairedExample) for e in data):
        raise ValueError(f"objective {objective!r} needs {'paired' if paired else 'SFT'} examples")
    # accelerate keeps one process-wide state, so precision is applied per call by autocast.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    config = _resolve(config, model, accelerator.device)
    cuda = accelerator.device.type == "cuda"
    # The run's own random stream: dropout is a function of ``seed`` (and a checkpoint).
    with torch.random.fork_rng(devices=[accelerator.device] if cuda else []):
        torch.manual_seed(seed)
        if config.gradient_checkpointing:
            _set_checkpointing(model, True)
        optimiser = _adamw(list(params.values()), config)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimiser, linear_schedule(config.warmup_steps, config.steps)
        )
        model, optimiser = accelerator.prepare(model, optimiser)
        order = data_order(len(data), config.steps, config.batch_size, seed)
        rows: list[dict[str, Any]] = []
        start_step = 0
        folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
        # Taken before a checkpoint is loaded: a resumed call starts from the same weights.
        # The same parameter objects, whatever accelerate wrapped around the model.
        inner = accelerator.unwrap_model(model)
        teacher: Teacher = FrozenTeacher(params) if paired else nullcontext
        world, rank = accelerator.num_processes, accelerator.process_index
        fingerprint = content_hash(
            {
                "config": config.model_dump(),
                # A checkpoint of the loop at another version would resume other arithmetic.
                "trainer": TRAINER_VERSION,
                "objective": objective,
                "seed": seed,
                "data": [_token_ids(e) for e in data],
            }
        )
        # Only a run that writes checkpoints reads them: a folder planted where one that
        # does not is never looked at.
        if config.checkpoint_every:
            start_step, rows = _resume(folder, fingerprint, params, optimiser, scheduler)
        # accelerate's clipping is needed to gather sharded or scaled gradients; one plain
        # process has neither, and torch's own is cheaper per step.
        plain = world == 1 and accelerator.distributed_type == DistributedType.NO
        clip = torch.nn.utils.clip_grad_norm_ if plain else accelerator.clip_grad_norm_
        throughput = Throughput(model, accelerator.device, paired=paired)
        end = config.steps if stop_after is None else min(config.steps, start_step + stop_after)
        model.train()
        bar = tqdm(
            range(start_step, end), desc=desc, disable=not progress or rank != 0, leave=False
        )
        for step in bar:
            started = time.perf_counter()
            step_examples = [data[i] for i in order[step]]
            n_tokens = sum(e.n_target_tokens for e in step_examples)
            step_loss = _accumulate_gradients(
                model, accelerator, step_examples, n_tokens, objective,
                tokenizer.pad_token_id, config, teacher,
            )  # fmt: skip
            grad_norm = float(clip(list(params.values()), config.max_grad_norm))
            if not np.isfinite(grad_norm):
                raise FloatingPointError(
                    f"{desc}: non-finite gradient norm at step {step}; lower the learning rate"
                )
            lr = scheduler.get_last_lr()[0]
            optimiser.step()
            scheduler.step()
            optimiser.zero_grad(set_to_none=True)
            if world > 1:
                step_loss = accelerator.reduce(step_loss, "sum")
            loss_value = float(step_loss)
            seconds = time.perf_counter() - started
            all_tokens = sum(e.n_input_tokens for e in step_examples)
            rows.append(
                {
                    "step": step,
                    "loss": loss_value,
                    "grad_norm": grad_norm,
                    "lr": lr,
                    "n_tokens": n_tokens,
                    "seconds": seconds,
                    **throughput.measure(all_tokens, seconds),
                    "examples": order[step],
                }
            )
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if (
                folder is not None
                and config.checkpoint_every
                and (step + 1) % config.checkpoint_every == 0
                and step + 1 < config.steps
            ):
                if accelerator.is_main_process:
                    state = {
                        "params": {n: p.detach() for n, p in params.items()},
                        "optimiser": optimiser.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": rng_state(),
                        "log": rows,
                    }
                    save_checkpoint(folder, step + 1, state, fingerprint)
                accelerator.wait_for_everyone()
        if folder is not None and end == config.steps and accelerator.is_main_process:
            clear_checkpoints(folder)  # finished: nothing to resume
        if config.gradient_checkpointing:
            _set_checkpointing(inner, False)
        inner.eval()
        return pl.DataFrame(rows, schema=LOG_SCHEMA)


def train_sft(
    model: Any,
    tokenizer: Any,
    examples: Sequence[tuple[Sequence[Message], str]],
    config: TrainingSpec,
    **kwargs: Any,
) -> pl.DataFrame:
    """Encode (prompt messages, target) pairs and :func:`train` on them with the SFT loss."""
    return train(
        model, tokenizer, encode_sft(tokenizer, examples, config.max_length), config, **kwargs
    )
