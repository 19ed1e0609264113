"""Worker for the two-process (gloo) equivalence test: trains and prints its loss log."""

import json
import sys

import torch

from shiftlab.models import attach_lora, build_tiny_llama
from shiftlab.spec import LoraSpec, ToyworldSpec, TrainingSpec
from shiftlab.toyworld import build_tokenizer, build_toyworld_suite
from shiftlab.training import encode_sft, train


def main() -> None:
    torch.set_num_threads(1)
    tok = build_tokenizer()
    suite = build_toyworld_suite("sycophancy", ToyworldSpec(n_induction=32, n_eval=8))
    data = encode_sft(tok, [(e.messages, e.target) for e in suite.induction], 48)
    model = attach_lora(build_tiny_llama(len(tok), seed=7), LoraSpec(r=4), seed=3)
    config = TrainingSpec(
        steps=4, learning_rate=5e-3, batch_size=8, micro_batch_size=2, warmup_steps=1
    )
    log = train(model, tok, data, config, progress=False)
    weights = sum(float(p.detach().double().sum()) for p in model.parameters() if p.requires_grad)
    print("RESULT " + json.dumps({"loss": log["loss"].to_list(), "weights": weights}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
