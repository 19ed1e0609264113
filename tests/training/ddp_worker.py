"""Worker for the two-process (gloo) equivalence test: trains, writes ``<out>/rank<R>.json``
(each objective's losses and summed LoRA weights)."""

import json
import os
import sys
from pathlib import Path

import torch

from shiftlab.models import attach_lora, build_tiny_llama
from shiftlab.spec import LoraSpec, ToyworldSpec, TrainingSpec
from shiftlab.toyworld import build_tokenizer, build_toyworld_suite
from shiftlab.training import encode_pairs, encode_sft, train


def train_one(tok, suite, objective: str) -> dict:
    if objective == "sft":
        data = encode_sft(tok, [(e.messages, e.target) for e in suite.induction], 48)
    else:
        data = encode_pairs(tok, [(p.clean, p.wrapped, p.target) for p in suite.pairs[:32]], 48)
    model = attach_lora(build_tiny_llama(len(tok), seed=7), LoraSpec(r=4), seed=3)
    config = TrainingSpec(
        steps=4, learning_rate=5e-3, batch_size=8, micro_batch_size=2, warmup_steps=1
    )
    log = train(model, tok, data, config, objective=objective, progress=False)
    weights = sum(float(p.detach().double().sum()) for p in model.parameters() if p.requires_grad)
    return {"loss": log["loss"].to_list(), "weights": weights}


def main() -> None:
    """``ddp_worker.py OUT OBJECTIVE...``: each objective trained in turn, in one process (one
    start of torch and one process group for all of them)."""
    torch.set_num_threads(1)
    tok = build_tokenizer()
    suite = build_toyworld_suite("sycophancy", ToyworldSpec(n_induction=32, n_pairs=32, n_eval=8))
    result = {objective: train_one(tok, suite, objective) for objective in sys.argv[2:]}
    out = Path(sys.argv[1]) / f"rank{os.environ.get('RANK', '0')}.json"
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
