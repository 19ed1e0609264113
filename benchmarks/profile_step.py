"""Where one LoRA training step of shiftlab's core spends its time: torch.profiler's top
operators by self CPU time.

    python benchmarks/profile_step.py [--case smollm2-cpu] [--cross-entropy default|fused|plain]
        [--quick] [--rows 10]

The step is the training loop's own (``bench_train.py``'s case: its model, data, LoRA on
all linear layers, best-fit-decreasing packing, ``sft_loss``, backward, clipping, fused
AdamW), profiled after two warm-up steps. Last line: ``profiled_step_seconds=<x>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", default="smollm2-cpu")
    parser.add_argument(
        "--cross-entropy",
        choices=("default", "fused", "plain"),
        default="default",
        help="the library's default (fused for a real vocabulary), or forced",
    )
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="the case's --quick shape")
    args = parser.parse_args()

    import bench_train
    import torch
    from torch.profiler import ProfilerActivity, profile

    from shiftlab.models import attach_lora
    from shiftlab.spec import LoraSpec
    from shiftlab.training import encode_sft, fused_cross_entropy, pack, sft_loss

    quick = bench_train.QUICK.get(args.case, {}) if args.quick else {}
    params = {**bench_train.CASES[args.case], **quick}
    model, tokenizer = bench_train.load(args.case)
    data = encode_sft(tokenizer, bench_train.examples(args.case, 3 * params["batch"]),
                      params["max_length"])  # fmt: skip
    model = attach_lora(model, LoraSpec(**bench_train.LORA))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=params["lr"], fused=True)
    model.train()

    def step(index: int) -> None:
        examples = data[index * params["batch"] : (index + 1) * params["batch"]]
        batch = pack(examples, tokenizer.pad_token_id, "bfd", params["max_length"])
        n_tokens = sum(e.n_target_tokens for e in examples)
        forced = {"default": None, "fused": True, "plain": False}[args.cross_entropy]
        with nullcontext() if forced is None else fused_cross_entropy(forced):
            loss, _ = sft_loss(model, batch)
        (loss / n_tokens).backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    step(0), step(1)  # warm up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        step(2)
        seconds = time.perf_counter() - started
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)
    print(f"{args.case}, one LoRA step ({params['batch']} examples x <= {params['max_length']} "
          f"tokens, cross-entropy: {args.cross_entropy}), "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(table)
    print(f"profiled_step_seconds={seconds:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
