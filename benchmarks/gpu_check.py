"""The GPU half of shiftlab's training core, checked on a lent GPU in a few minutes.

    bash benchmarks/gpu_check.sh [--smoke]     # or: python benchmarks/gpu_check.py [--smoke]

Made for a bare device image (PyTorch, transformers, peft; no network, no polars or
pydantic, no shiftlab install): it imports only the training-core modules that need torch
alone, straight from ``src/`` (the loss with its fused linear cross-entropy, packing, the
throughput meter), not the package's face (whose loop logs with polars and reads a pydantic
spec), and drives them with a minimal loop of its own: LoRA on all linear layers (peft),
AdamW, bf16 autocast, best-fit-decreasing packing, the summed loss divided by the step's
target tokens, as ``shiftlab.training.train`` does. Models are built from configs with
random weights and trained on random token ids, so nothing is downloaded.

1. The 1B Llama-shaped case of ``bench_train.py`` (hidden 2048, 16 layers, GQA 32/8, a
   49,152-token vocabulary), bf16, LoRA r=16: tokens/s and model-FLOPs utilisation, with
   the fused cross-entropy and without, and each one's peak memory.
2. Batched greedy generation on the same model: new tokens/s.
3. One small run trained on CPU (float32) and on the GPU (float32 with TF32 off, and bf16
   autocast) from the same weights and data: the per-step losses must agree to 1e-3
   relative in float32 (summation order alone; Adam amplifies it a little over 20 steps)
   and to 3e-2 in bf16 (unit roundoff 2^-8 = 3.9e-3 on every matmul input).

``--smoke`` shrinks every shape so the script runs on CPU in seconds (the "GPU" side is
then the CPU too): it shows the script works, not how fast anything is. Figures go to
stdout; with ``$OUT`` set, also to ``$OUT/gpu_check.json``. Last line: ``gpu_check=ok`` or
``gpu_check=FAILED (...)``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def core() -> types.SimpleNamespace:
    """shiftlab's torch-only training modules, without importing ``shiftlab.training``'s
    ``__init__`` (which needs polars and pydantic)."""
    sys.path.insert(0, str(ROOT / "src"))
    if "shiftlab.training" not in sys.modules:
        package = types.ModuleType("shiftlab.training")
        package.__path__ = [str(ROOT / "src" / "shiftlab" / "training")]
        sys.modules["shiftlab.training"] = package
    from shiftlab.chat import EncodedExample
    from shiftlab.training._fused_ce import fused_cross_entropy
    from shiftlab.training._losses import sft_loss
    from shiftlab.training._packing import pack
    from shiftlab.training._throughput import Throughput

    return types.SimpleNamespace(
        EncodedExample=EncodedExample,
        fused_cross_entropy=fused_cross_entropy,
        sft_loss=sft_loss,
        pack=pack,
        Throughput=Throughput,
    )


SHAPES = {
    "full": {
        "llama": {"vocab_size": 49152, "hidden_size": 2048, "intermediate_size": 5632,
                  "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8},
        "steps": 30, "batch": 16, "max_length": 512, "lora": 16,
        "generate": {"batch": 64, "prompt": 128, "new": 128},
        "small": {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256,
                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
        "small_steps": 20,
    },
    "smoke": {
        "llama": {"vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128,
                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
        "steps": 3, "batch": 4, "max_length": 64, "lora": 4,
        "generate": {"batch": 4, "prompt": 8, "new": 8},
        "small": {"vocab_size": 256, "hidden_size": 32, "intermediate_size": 64,
                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
        "small_steps": 5,
    },
}  # fmt: skip


def build(shape: dict[str, int], device: Any, dtype: Any, seed: int, lora: int) -> Any:
    """A Llama-shaped causal LM from its config (random weights), with a LoRA adapter on
    every linear layer but the head."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape, max_position_embeddings=2048, attn_implementation="sdpa")
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    adapter = LoraConfig(r=lora, lora_alpha=2 * lora, target_modules="all-linear")
    torch.manual_seed(seed + 1)
    return get_peft_model(model, adapter)


def examples(n: int, vocab: int, max_length: int, seed: int, lib: Any) -> list[Any]:
    """Random prompt + completion token ids (lengths spread over the row), loss on the
    completion only."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(max_length // 4, max_length + 1, (1,), generator=generator))
        prompt = max(1, length // 3)
        ids = torch.randint(1, vocab, (length,), generator=generator).tolist()
        labels = [-100] * prompt + ids[prompt:]
        out.append(lib.EncodedExample(tuple(ids), tuple(labels)))
    return out


def train_steps(
    model: Any, data: list[Any], steps: int, batch: int, max_length: int, lib: Any, *,
    bf16: bool, fused: bool, lr: float = 1e-3,
) -> dict[str, Any]:  # fmt: skip
    """The loop of ``shiftlab.training.train`` in miniature; per-step losses, tokens/s and
    MFU after the first step, peak memory."""
    import torch

    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr, fused=True)
    throughput = lib.Throughput(model, device, paired=False)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    losses, seconds, tokens = [], [], []
    model.train()
    for step in range(steps):
        chunk = [data[(step * batch + i) % len(data)] for i in range(batch)]
        rows = {k: v.to(device) for k, v in lib.pack(chunk, 0, "bfd", max_length).items()}
        n_tokens = sum(e.n_target_tokens for e in chunk)
        if cuda:
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with (
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16),
            lib.fused_cross_entropy(fused),
        ):
            loss, _ = lib.sft_loss(model, rows)
        (loss / n_tokens).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - started)
        tokens.append(sum(e.n_input_tokens for e in chunk))
        losses.append(float(loss.detach()) / n_tokens)
    timed = max(1, steps - 1)
    rate = sum(tokens[-timed:]) / sum(seconds[-timed:])
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    mfu = throughput.measure(sum(tokens[-timed:]), sum(seconds[-timed:]))["mfu"]
    return {"losses": losses, "tokens_per_second": rate, "peak_mib": peak, "mfu": mfu}


def generation(model: Any, spec: dict[str, int], vocab: int) -> dict[str, float]:
    """Greedy batched generation of ``new`` tokens after ``prompt``-token prompts."""
    import torch

    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(7)
    prompts = torch.randint(1, vocab, (spec["batch"], spec["prompt"]), generator=generator)
    prompts = prompts.to(device)
    kwargs = {"do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    model.eval()
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=True):
        model.generate(input_ids=prompts[:, :4], max_new_tokens=2, **kwargs)  # warm up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        out = model.generate(
            input_ids=prompts, attention_mask=torch.ones_like(prompts),
            max_new_tokens=spec["new"], min_new_tokens=spec["new"], **kwargs,
        )  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
    new = (out.shape[1] - spec["prompt"]) * spec["batch"]
    return {"new_tokens": new, "seconds": seconds, "new_tokens_per_second": new / seconds}


def relative_gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, runs on CPU")
    args = parser.parse_args()
    import torch

    lib = core()
    shapes = SHAPES["smoke" if args.smoke else "full"]
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("no CUDA device: run with --smoke for the CPU check")
        print("gpu_check=FAILED (no CUDA device)")
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "smoke": args.smoke,
    }
    import peft
    import transformers

    results["transformers"], results["peft"] = transformers.__version__, peft.__version__
    print(f"device {results['device']}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, peft {peft.__version__}", flush=True)  # fmt: skip
    failures = []

    # 1. The 1B case (bf16 weights on GPU; float32 in smoke mode on CPU).
    started = time.perf_counter()
    dtype = torch.bfloat16 if cuda else torch.float32
    big = build(shapes["llama"], device, dtype, seed=0, lora=shapes["lora"])
    data = examples(shapes["steps"] * shapes["batch"], shapes["llama"]["vocab_size"],
                    shapes["max_length"], seed=0, lib=lib)  # fmt: skip
    n_params = sum(p.numel() for p in big.parameters())
    print(f"1B case: {n_params / 1e9:.2f} B parameters, built in "
          f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
    for fused in (True, False):
        run = train_steps(big, data, shapes["steps"], shapes["batch"], shapes["max_length"],
                          lib, bf16=cuda, fused=fused, lr=3e-4)  # fmt: skip
        name = "fused" if fused else "plain"
        results[f"train_{name}"] = run
        mfu = f"{run['mfu']:.1%}" if run["mfu"] is not None else "n/a"
        peak = f"{run['peak_mib']:,.0f} MiB" if run["peak_mib"] is not None else "n/a"
        print(f"  train ({name} cross-entropy): {run['tokens_per_second']:,.0f} tok/s, "
              f"MFU {mfu}, peak {peak}, loss {run['losses'][0]:.3f} -> "
              f"{run['losses'][-1]:.3f}", flush=True)  # fmt: skip
        if not all(map(lambda x: x == x and abs(x) < 1e4, run["losses"])):
            failures.append(f"non-finite loss ({name})")

    # 2. Batched generation.
    gen = generation(big, shapes["generate"], shapes["llama"]["vocab_size"])
    results["generation"] = gen
    print(f"  generation: batch {shapes['generate']['batch']}, {gen['new_tokens']:,} new "
          f"tokens in {gen['seconds']:.2f} s = {gen['new_tokens_per_second']:,.0f} tok/s",
          flush=True)  # fmt: skip
    del big
    if cuda:
        torch.cuda.empty_cache()

    # 3. The same small run on CPU and on the device.
    cpu = build(shapes["small"], "cpu", torch.float32, seed=3, lora=8)
    small = examples(8 * shapes["small_steps"], shapes["small"]["vocab_size"], 64, 1, lib)
    twins = {"gpu_fp32": (copy.deepcopy(cpu).to(device), False),
             "gpu_bf16": (copy.deepcopy(cpu).to(device), True)}  # fmt: skip
    steps = shapes["small_steps"]
    reference = train_steps(cpu, small, steps, 8, 64, lib, bf16=False, fused=True)["losses"]
    allow = {"gpu_fp32": 1e-3, "gpu_bf16": 3e-2}
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for name, (model, bf16) in twins.items():
        losses = train_steps(model, small, steps, 8, 64, lib, bf16=bf16, fused=True)["losses"]
        gap = relative_gap(losses, reference)
        results[f"cpu_vs_{name}"] = {"max_relative_loss_gap": gap, "allowed": allow[name],
                                     "losses": losses, "cpu_losses": reference}  # fmt: skip
        verdict = "ok" if gap <= allow[name] else "TOO FAR"
        print(f"  CPU float32 vs {name}: {steps} steps, largest relative loss gap "
              f"{gap:.2e} (allowed {allow[name]:.0e}) {verdict}", flush=True)  # fmt: skip
        if gap > allow[name]:
            failures.append(f"cpu vs {name} gap {gap:.2e}")

    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(results, indent=1))
    train = results["train_fused"]
    print(f"train_tokens_per_second={train['tokens_per_second']:.0f}")
    if train["mfu"] is not None:
        print(f"train_mfu={train['mfu']:.4f}")
    print(f"generation_tokens_per_second={gen['new_tokens_per_second']:.0f}")
    print("gpu_check=ok" if not failures else f"gpu_check=FAILED ({'; '.join(failures)})")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
