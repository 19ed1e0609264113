"""Shift statistics against the drift libraries researchers would otherwise reach for.

    python benchmarks/bench_shift.py [--skip-large]

1. ``mmd_test`` against alibi-detect's ``MMDDrift`` (PyTorch backend) on the same 2,000
   vs 2,000 x 384 embeddings, 1,000 permutations, one bandwidth: both times, the ratio,
   and the statistics side by side (they must agree to 1e-4 relative).
2. Against frouros' MMD: its statistic, and its time per permutation from a short run
   (its full test recomputes every kernel per permutation and takes many minutes).
3. shiftlab alone at 5,000 and 50,000 per side (the kernel streamed by row blocks), each
   in a fresh process so its peak memory is its own.
4. ``TextEncoder`` against sentence-transformers' ``encode`` on the same 2,048 texts:
   throughput ratio and the smallest cosine between the two embeddings of a text, at
   shiftlab's default precision (bfloat16 on a CPU with AMX or AVX512-BF16, else float32)
   and in float32 (``--encoder-only`` runs this part alone), and shiftlab's float32 time
   over the FLOP floor of its linear layers (``encoder_floor_ratio``): the multiply-adds
   of every query, key, value, attention-output and MLP projection on the padded tokens
   of shiftlab's own length batches, at the float32 ``addmm`` throughput measured on each
   of those shapes (rows: one batch's tokens). Attention, GELU and layer norms are left
   out, so the floor is a lower bound.

alibi-detect and frouros pin old numpy, scipy and transformers, so they run from a
virtual environment this script creates on first use (``$SHIFTLAB_PEER_VENV``, default
``~/.cache/shiftlab/bench-venvs/drift``); they are never dependencies of shiftlab.
sentence-transformers comes with shiftlab's ``bench`` extra.

The floor: in the same process as the timed ``mmd_test``, the machine's float32 GEMM
throughput is measured on the test's own two shapes (best of several): the kernel's
(n + m) x d x (n + m) Gram product and the permutations' (n + m) x (n + m) x (B + 1)
product of the kernel with every assignment at once, in whichever of its two orientations
(kernel x assignments^T, or assignments x kernel) MKL runs faster. Their summed time is
the FLOP floor of a permutation test that computes the kernel once and every
permutation's quadratic form; ``mmd_floor_ratio`` is ``mmd_test``'s time (best of 5,
warm) over it, the two measured in turn so that a busy moment slows both alike.

Last lines: ``mmd_speed_ratio_vs_alibi=<x>`` (target: at least 200) and
``mmd_floor_ratio=<x>`` (target: at most 2).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

import numpy as np
from _timing import best_seconds

HERE = Path(__file__).resolve().parent
PEER_VENV = Path(
    os.environ.get("SHIFTLAB_PEER_VENV", Path.home() / ".cache/shiftlab/bench-venvs/drift")
)
# torch pinned first so pip does not fetch a CUDA build for alibi-detect's torch extra.
PEER_PACKAGES = ("torch==2.13.0", "alibi-detect[torch]==0.13.0", "frouros==0.9.0")
N_PERMUTATIONS = 1000
FROUROS_PERMUTATIONS = 3


def peer_python() -> Path:
    """The peer venv's interpreter, creating the venv on first use."""
    python = PEER_VENV / "bin" / "python"
    marker = PEER_VENV / ".installed"
    if not marker.is_file() or marker.read_text() != " ".join(PEER_PACKAGES):
        print(f"creating the peer venv at {PEER_VENV} (once) ...", flush=True)
        venv.create(PEER_VENV, with_pip=True, clear=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, PEER_PACKAGES[0]], check=True)
        subprocess.run([*pip, *PEER_PACKAGES], check=True)
        marker.write_text(" ".join(PEER_PACKAGES))
    return python


def embeddings(n: int, seed: int = 0, dim: int = 384) -> tuple[np.ndarray, np.ndarray]:
    """Two unit-norm samples like sentence embeddings, y moved a little from x."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=dim)
    x = rng.normal(size=(n, dim)) + 2 * centre / np.linalg.norm(centre)
    y = rng.normal(size=(n, dim)) + 2 * centre / np.linalg.norm(centre) + 0.15
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return x.astype(np.float32), y.astype(np.float32)


def shiftlab_mmd(n: int, bandwidth: float | str, n_permutations: int, repeats: int = 1) -> dict:
    """``mmd_test`` on ``embeddings(n)`` in a fresh process: result, seconds (first call and
    best of ``repeats``), peak MiB; with ``repeats > 1`` also the GEMM floor measured there."""
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(HERE)!r})
from bench_shift import embeddings, gemm_floor
from shiftlab.shift import mmd_test
x, y = embeddings({n})
times, floors = [], []
for _ in range({repeats}):
    start = time.perf_counter()
    result = mmd_test(x, y, bandwidth={bandwidth!r}, n_permutations={n_permutations},
                      device="cpu")
    times.append(time.perf_counter() - start)
    if {repeats} > 1:  # interleaved, so a busy moment slows both sides alike
        floors.append(gemm_floor(2 * {n}, x.shape[1], {n_permutations}, repeats=1))
floor = None
if floors:
    floor = dict(floors[0], seconds=min(f["seconds"] for f in floors),
                 kernel_gflops=max(f["kernel_gflops"] for f in floors),
                 permutation_gflops=max(f["permutation_gflops"] for f in floors))
print(json.dumps({{"statistic": result.statistic, "p_value": result.p_value,
                  "bandwidth": result.bandwidth, "seconds": min(times),
                  "first_seconds": times[0], "floor": floor,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def gemm_floor(total: int, dim: int, n_permutations: int, repeats: int = 5) -> dict:
    """The permutation test's FLOP floor on this machine: float32 GEMM on its two shapes,
    the kernel's Gram product (total x dim x total) and the kernel against every
    assignment (total x total x (B + 1), the faster orientation), best of ``repeats``
    each, into reused buffers."""
    import torch

    generator = torch.Generator().manual_seed(0)
    z = torch.randn(total, dim, generator=generator)
    kernel = torch.empty(total, total)
    signs = torch.randn(n_permutations + 1, total, generator=generator).sign_()
    products = torch.empty(total, n_permutations + 1)
    products_t = torch.empty(n_permutations + 1, total)
    kernel_seconds = best_seconds(lambda: torch.mm(z, z.T, out=kernel), repeats)
    permutation_seconds = min(
        best_seconds(lambda: torch.mm(kernel, signs.T, out=products), repeats),
        best_seconds(lambda: torch.mm(signs, kernel, out=products_t), repeats),
    )
    kernel_flop = 2.0 * total * total * dim
    permutation_flop = 2.0 * total * total * (n_permutations + 1)
    return {
        "kernel_gflops": kernel_flop / kernel_seconds / 1e9,
        "permutation_gflops": permutation_flop / permutation_seconds / 1e9,
        "gflop": (kernel_flop + permutation_flop) / 1e9,
        "seconds": kernel_seconds + permutation_seconds,
        "threads": torch.get_num_threads(),
    }


def reference_mmd(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """The unbiased MMD² in float64 straight from its definition (O(n²) memory)."""
    z = np.concatenate([x, y]).astype(np.float64)
    squared = (z * z).sum(1)
    k = np.exp(-np.maximum(squared[:, None] + squared[None] - 2 * z @ z.T, 0) / (2 * sigma**2))
    n, m = len(x), len(y)
    xx = (k[:n, :n].sum() - np.trace(k[:n, :n])) / (n * (n - 1))
    yy = (k[n:, n:].sum() - np.trace(k[n:, n:])) / (m * (m - 1))
    return float(xx + yy - 2 * k[:n, n:].mean())


def peers(x: np.ndarray, y: np.ndarray, sigma: float) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.npz"
        np.savez(path, x=x, y=y)
        command = [str(peer_python()), str(HERE / "_drift_peers.py"), str(path), repr(sigma),
                   str(N_PERMUTATIONS), str(FROUROS_PERMUTATIONS)]  # fmt: skip
        done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def texts(count: int = 2048) -> list[str]:
    """Distinct chat turns (prompts and answers) from the study's released data: where
    ``shiftlab data fetch consistency-misalignment`` puts it, else the shared copy."""
    from shiftlab.behaviours import data_home

    candidates = [data_home() / "consistency-misalignment",
                  HERE.parent.parent / "shared" / "data" / "consistency-misalignment"]  # fmt: skip
    root = next((c for c in candidates if c.is_dir()), None)
    if root is None:
        raise SystemExit("run `shiftlab data fetch consistency-misalignment` first")
    seen: dict[str, None] = {}
    for path in sorted(root.glob("*/*.jsonl")):
        for line in path.open():
            for message in json.loads(line).get("messages", []):
                seen[message["content"]] = None
    if len(seen) < count:
        raise SystemExit(f"only {len(seen)} distinct texts in {root}; need {count}")
    return list(seen)[:count]


def encoders() -> dict:
    from sentence_transformers import SentenceTransformer

    from shiftlab._workers import retain_freed_memory
    from shiftlab.shift import TextEncoder, default_encoder_path

    retain_freed_memory()  # as in shiftlab's study workers; both sides get it
    sample = texts()
    ours = TextEncoder(device="cpu")
    exact = TextEncoder(device="cpu", precision="float32")
    theirs = SentenceTransformer(str(default_encoder_path()), device="cpu")
    for encoder in (ours, exact):
        encoder.encode(sample[:64])  # warm up
    theirs.encode(sample[:64], batch_size=64)

    def timed(encode) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        vectors = encode(sample)
        return time.perf_counter() - start, vectors

    # In turn, so that a busy moment slows all of them alike. sentence-transformers at its
    # best batch size: 32 and 64 measured within noise of each other, larger ones slower.
    ours_seconds, a = timed(ours.encode)
    theirs_seconds, b = min(
        (timed(lambda s, size=size: theirs.encode(s, batch_size=size, normalize_embeddings=True))
         for size in (32, 64)),
        key=lambda timing: timing[0],
    )  # fmt: skip
    exact_seconds, c = timed(exact.encode)
    floor = encoder_floor(exact, sample)

    def min_cosine(u: np.ndarray) -> float:
        cosine = (u * b).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(b, axis=1)
        return float(cosine.min())

    return {
        "texts": len(sample),
        "precision": ours.precision,
        "shiftlab_seconds": ours_seconds,
        "float32_seconds": exact_seconds,
        "sentence_transformers_seconds": theirs_seconds,
        "min_cosine": min_cosine(a),
        "float32_min_cosine": min_cosine(c),
        "floor": floor,
    }


def encoder_floor(encoder: Any, sample: list[str], repeats: int = 5) -> dict:
    """The seconds ``encoder``'s linear layers need on ``sample`` at this machine's float32
    ``addmm`` throughput on their shapes (see the module's docstring)."""
    import torch

    from shiftlab.shift import length_batches

    ids = encoder.tokenizer(
        sample, truncation=True, max_length=encoder.max_length, return_attention_mask=False
    )["input_ids"]
    lengths = [len(i) for i in ids]
    batches = length_batches(lengths, encoder.batch_size, encoder.batch_tokens)
    padded = sum(len(chunk) * max(lengths[i] for i in chunk) for chunk in batches)
    config = encoder.model.config
    hidden, inner = config.hidden_size, config.intermediate_size
    # (fan in, fan out) -> projections of that shape in a layer: q, k, v, attention output;
    # MLP up; MLP down.
    shapes = {(hidden, hidden): 4, (hidden, inner): 1, (inner, hidden): 1}
    generator = torch.Generator().manual_seed(0)
    seconds = flop = 0.0
    for (fan_in, fan_out), count in shapes.items():
        x = torch.randn(encoder.batch_tokens, fan_in, generator=generator)
        weight = torch.randn(fan_out, fan_in, generator=generator)
        bias = torch.randn(fan_out, generator=generator)
        out = torch.empty(encoder.batch_tokens, fan_out)
        once = best_seconds(functools.partial(torch.addmm, bias, x, weight.T, out=out), repeats)
        rate = 2.0 * encoder.batch_tokens * fan_in * fan_out / once
        shape_flop = 2.0 * padded * fan_in * fan_out * count * config.num_hidden_layers
        flop += shape_flop
        seconds += shape_flop / rate
    return {"seconds": seconds, "gflop": flop / 1e9, "padded_tokens": padded,
            "tokens": sum(lengths)}  # fmt: skip


def report_encoders() -> None:
    enc = encoders()
    floor = enc["floor"]
    theirs = enc["sentence_transformers_seconds"]
    print(f"encoder, {enc['texts']} texts: sentence-transformers {theirs:.2f} s; shiftlab "
          f"({enc['precision']}) {enc['shiftlab_seconds']:.2f} s, min cosine "
          f"{enc['min_cosine']:.6f}; shiftlab (float32) {enc['float32_seconds']:.2f} s, "
          f"min cosine {enc['float32_min_cosine']:.6f}")  # fmt: skip
    print(f"encoder_float32_speed_ratio_vs_sentence_transformers="
          f"{theirs / enc['float32_seconds']:.2f}")  # fmt: skip
    print(f"encoder floor (linear layers, float32): {floor['seconds']:.2f} s for "
          f"{floor['gflop']:.0f} GFLOP on {floor['padded_tokens']:,} padded tokens "
          f"({floor['tokens']:,} real)")  # fmt: skip
    print(f"encoder_floor_ratio={enc['float32_seconds'] / floor['seconds']:.2f}")
    print(f"encoder_speed_ratio_vs_sentence_transformers={theirs / enc['shiftlab_seconds']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-large", action="store_true", help="skip 50,000 vs 50,000")
    parser.add_argument(
        "--floor-only", action="store_true", help="only mmd_test against the GEMM floor"
    )
    parser.add_argument("--encoder-only", action="store_true", help="only the encoders")
    args = parser.parse_args()
    if args.encoder_only:
        report_encoders()
        return 0
    if args.floor_only:
        ours = shiftlab_mmd(2000, "median", N_PERMUTATIONS, repeats=5)
        floor = ours["floor"]
        print(
            f"mmd_test {ours['seconds']:.3f} s (first {ours['first_seconds']:.3f} s), floor "
            f"{floor['seconds']:.3f} s ({floor['gflop']:.1f} GFLOP at "
            f"{floor['kernel_gflops']:.1f} / {floor['permutation_gflops']:.1f} GFLOP/s)"
        )
        print(f"mmd_floor_ratio={ours['seconds'] / floor['seconds']:.2f}")
        return 0

    x, y = embeddings(2000)
    ours = shiftlab_mmd(2000, "median", N_PERMUTATIONS, repeats=5)
    floor = ours["floor"]
    sigma = ours["bandwidth"]
    theirs = peers(x, y, sigma)
    alibi, frouros = theirs["alibi"], theirs["frouros"]
    print(f"2000 vs 2000 x 384, {N_PERMUTATIONS} permutations, sigma {sigma:.6f}")
    print(
        f"  shiftlab mmd_test : {ours['seconds']:8.2f} s  MMD² {ours['statistic']:.8f}  "
        f"p {ours['p_value']:.4f}  (best of 5; first call {ours['first_seconds']:.2f} s)"
    )
    print(f"  GEMM floor        : {floor['seconds']:8.2f} s  ({floor['gflop']:.1f} GFLOP; float32 "
          f"{floor['kernel_gflops']:.1f} GFLOP/s on the kernel's shape, "
          f"{floor['permutation_gflops']:.1f} on the permutations', "
          f"{floor['threads']} threads)")  # fmt: skip
    # alibi-detect counts the permutations at least as extreme without the observed
    # assignment, so it can say p = 0; a 1,000-permutation test resolves p >= 1/1001.
    alibi_p = alibi["p_value"]
    alibi_p_text = (
        f"{alibi_p:.4f}"
        if alibi_p > 0
        else f"0 as alibi-detect reports it (resolvable: >= 1/{N_PERMUTATIONS + 1})"
    )
    print(f"  alibi-detect torch: {alibi['seconds']:8.2f} s  MMD² {alibi['statistic']:.8f}  "
          f"p {alibi_p_text}")  # fmt: skip
    per_permutation = ours["seconds"] / N_PERMUTATIONS
    print(f"  frouros           : {frouros['seconds_per_permutation']:8.2f} s per permutation "
          f"({frouros['n_permutations']} run; shiftlab {per_permutation * 1000:.2f} ms), "
          f"MMD² {frouros['statistic']:.8f}")  # fmt: skip
    reference = reference_mmd(x, y, sigma)
    print(f"  float64 reference : MMD² {reference:.8f}")
    for name, peer in (("alibi", alibi), ("frouros", frouros)):
        relative = abs(peer["statistic"] - ours["statistic"]) / abs(ours["statistic"])
        verdict = "ok" if relative <= 1e-4 else "DISAGREE"
        print(f"  statistic vs {name}: relative difference {relative:.2e} ({verdict})")
    for name, value in (("shiftlab", ours["statistic"]), ("alibi", alibi["statistic"]),
                        ("frouros", frouros["statistic"])):  # fmt: skip
        print(f"  {name} vs the float64 reference: {abs(value - reference) / reference:.2e}")
    slower = frouros["seconds_per_permutation"] / per_permutation
    print(f"frouros_time_per_permutation_ratio={slower:.1f}")

    sizes = (5000,) if args.skip_large else (5000, 50000)
    for n in sizes:
        run = shiftlab_mmd(n, "median", N_PERMUTATIONS)
        print(f"shiftlab {n} vs {n}: {run['seconds']:.1f} s, peak {run['peak_mib']:.0f} MiB, "
              f"MMD² {run['statistic']:.6f}, p {run['p_value']:.4f}")  # fmt: skip
        print(f"peak_memory_mib_{n}={run['peak_mib']:.0f}")

    report_encoders()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak_child_memory_mib={peak:.0f}")
    print(f"mmd_speed_ratio_vs_alibi={alibi['seconds'] / ours['seconds']:.1f}")
    print(f"mmd_floor_ratio={ours['seconds'] / floor['seconds']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
