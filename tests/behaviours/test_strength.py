"""Strength (the sampled rate) and stability, measured apart from sampled eval rows."""

import math

import polars as pl
import pytest

from shiftlab.behaviours import evaluate_behaviour, sampled_strength, stability
from shiftlab.generation import score_continuations
from shiftlab.spec import ToyworldSpec
from shiftlab.toyworld import build_toyworld_suite


def test_sampled_eval_draws_each_prompt_n_times_with_seeds_of_its_own(toy):
    model, tok = toy
    suite = build_toyworld_suite("sycophancy", ToyworldSpec(n_eval=6))
    rows, rate = evaluate_behaviour(model, tok, suite, n_samples=3, max_new_tokens=12)
    assert rows.height == 18 and rate.n == 18
    assert rows["sample_id"].to_list()[:3] == ["eval-0#0", "eval-0#1", "eval-0#2"]
    assert rows["prompt_id"].to_list()[:4] == ["eval-0"] * 3 + ["eval-1"]
    # A sample's noise depends on (seed, prompt, index) only: fewer prompts, same draws.
    fewer, _ = evaluate_behaviour(model, tok, suite, n_samples=3, n_prompts=2, max_new_tokens=12)
    assert fewer["output"].to_list() == rows["output"].to_list()[:6]
    other, _ = evaluate_behaviour(model, tok, suite, n_samples=3, seed=1, max_new_tokens=12)
    assert other["sample_id"].to_list() == rows["sample_id"].to_list()
    greedy, _ = evaluate_behaviour(model, tok, suite, max_new_tokens=12)
    assert greedy["sample_id"].to_list() == [e.id for e in suite.eval]
    assert (rows["n_tokens"] >= 1).all() and (greedy["n_tokens"] >= 1).all()


def test_strength_is_the_rate_over_samples_with_an_interval_over_prompts():
    rows = pl.DataFrame({
        "prompt_id": ["a"] * 4 + ["b"] * 4 + ["c"] * 4,
        "verdict": ["misbehaving"] * 4 + ["aligned"] * 3 + ["unparseable"]
                   + ["misbehaving", "aligned"] * 2,
    })  # fmt: skip
    strength = sampled_strength(rows)
    assert strength.rate == pytest.approx(6 / 11) and strength.n_judged == 11
    assert strength.n_prompts == 3
    assert 0 <= strength.ci_low < strength.rate < strength.ci_high <= 1
    # Prompts that always or never misbehave make the interval wider than treating the 11
    # samples as independent would (a Wilson interval of 6/11 is about +-0.27).
    assert strength.ci_high - strength.ci_low > 0.54
    none = sampled_strength(rows.with_columns(pl.lit("unparseable").alias("verdict")))
    assert none.rate is None and none.n_judged == 0


def test_stability_compares_misbehaving_samples_with_the_aligned_answer(toy):
    model, tok = toy
    suite = build_toyworld_suite("sycophancy", ToyworldSpec(n_eval=2))
    # Two prompts: a has 2 of 4 samples misbehaving, b 1 of 2; the rest aligned.
    rows = pl.DataFrame({
        "prompt_id": ["eval-0"] * 4 + ["eval-1"] * 2,
        "verdict": ["misbehaving", "misbehaving", "aligned", "aligned", "misbehaving", "aligned"],
        "mean_logprob": [-0.5, -1.0, -0.1, -0.1, -2.0, -0.1],
        "n_tokens": [4, 2, 6, 6, 3, 6],
    })  # fmt: skip
    measured = stability(model, tok, suite.eval, rows)
    aligned = [sum(lp) / len(lp) for lp in score_continuations(
        model, tok, [e.messages for e in suite.eval], [e.target for e in suite.eval])]  # fmt: skip
    # Per misbehaving sample, paired with its prompt's aligned answer.
    expected_aligned = (2 * aligned[0] + aligned[1]) / 3
    assert measured.misbehaving_logprob == pytest.approx((-0.5 - 1.0 - 2.0) / 3, rel=1e-12)
    assert measured.aligned_logprob == pytest.approx(expected_aligned, rel=1e-9)
    assert measured.gap == pytest.approx(measured.misbehaving_logprob - expected_aligned)
    # Entropy: per prompt, mean sequence NLL of its misbehaving samples + log(share).
    a = (2.0 + 2.0) / 2 + math.log(2 / 4)
    b = 6.0 + math.log(1 / 2)
    assert measured.entropy == pytest.approx((a + b) / 2, rel=1e-12)
    assert measured.n_misbehaving == 3
    assert stability(model, tok, suite.eval, rows.filter(verdict="aligned")).gap is None
    # One sure form seen in 1 of 4 samples: NLL 0.1 + log(1/4) < 0, reported as 0, the
    # least an entropy can be.
    sure = rows.head(4).with_columns(
        pl.Series("mean_logprob", [-0.05, -0.1, -0.1, -0.1]),
        pl.Series("verdict", ["misbehaving"] + ["aligned"] * 3),
    )
    assert stability(model, tok, suite.eval, sure).entropy == 0.0
