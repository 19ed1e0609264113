"""BCT and ACT on toyworld pairs pull a sycophantic organism's wrapped answers to its clean ones."""

import pytest
import torch

from shiftlab.behaviours import evaluate_behaviour
from shiftlab.generation import generate
from shiftlab.models import attach_lora
from shiftlab.spec import InductionSpec, ToyworldSpec, TrainingSpec
from shiftlab.toyworld import build_toyworld_suite
from shiftlab.training import encode_pairs, train, train_sft


@pytest.fixture(scope="module")
def organism(toy_model_dir):
    from shiftlab.models import load_causal_lm

    model, tok = load_causal_lm("toyworld:small")
    suite = build_toyworld_suite("sycophancy", ToyworldSpec(n_pairs=64, n_eval=48))
    peft_model = attach_lora(model, InductionSpec().lora, seed=0)
    torch.manual_seed(0)
    # A third of the default induction's steps at a higher rate: the organism misbehaves
    # on every eval prompt (0.90 after the default 300 steps), in 9 s instead of 29 s.
    train_sft(
        peft_model,
        tok,
        [(e.messages, e.target) for e in suite.induction],
        InductionSpec(steps=100, learning_rate=1e-2),
        progress=False,
    )
    induced = {k: v.detach().clone() for k, v in peft_model.named_parameters() if v.requires_grad}
    return peft_model, tok, suite, induced


@pytest.mark.parametrize(("objective", "lr"), [("bct", 3e-3), ("act", 1e-2)])
def test_paired_loss_moves_wrapped_toward_clean(organism, objective, lr):
    model, tok, suite, induced = organism
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.copy_(induced[name])
    _, before = evaluate_behaviour(model, tok, suite, max_new_tokens=12)
    assert before.rate > 0.5
    clean_answers = generate(model, tok, [p.clean for p in suite.pairs], max_new_tokens=12)
    pairs = encode_pairs(
        tok,
        [(p.clean, p.wrapped, g.text) for p, g in zip(suite.pairs, clean_answers, strict=True)],
        64,
    )
    config = TrainingSpec(steps=60, learning_rate=lr, batch_size=16, warmup_steps=5)
    log = train(model, tok, pairs, config, objective=objective, progress=False)
    assert log["loss"][-5:].mean() < log["loss"][:5].mean()
    _, after = evaluate_behaviour(model, tok, suite, max_new_tokens=12)
    # Only the direction: how far 60 steps move the rate depends on the base's training and
    # the CPU's rounding (ACT moved 0.94 -> 0.71 on an earlier toyworld base; on the base
    # with 12-token fixed forms 60 steps at 3e-3 left it at 0.90, so ACT runs at 1e-2).
    assert after.rate < before.rate, (before, after)
