"""Every label method writes a well-formed pool on toyworld; candidates are seed-stable."""

import dataclasses

import polars as pl
import pytest

from shiftlab.consistency import POOL_SCHEMA, PoolContext, build_pool, check_pool, make_scorer
from shiftlab.errors import DataError
from shiftlab.spec import MethodSpec, ScorerSpec, ToyworldSpec
from shiftlab.toyworld import build_toyworld_suite, toyworld_reward_model_dir

N_PROMPTS = 6


@pytest.fixture(scope="module")
def context(toy_model_dir):
    from shiftlab.models import load_causal_lm

    model, tok = load_causal_lm("toyworld:small")
    suite = build_toyworld_suite("sycophancy", ToyworldSpec(n_consistency=N_PROMPTS))
    return PoolContext(model, tok, suite, seed=0, max_new_tokens=12)


def pool_for(context, name, **knobs):
    method = MethodSpec(name=name, **knobs)
    reward_model = ScorerSpec(kind="reward_model", path=str(toyworld_reward_model_dir()))
    scorer = make_scorer(reward_model, context.suite.prompts) if method.uses_scorer else None
    return build_pool(method, dataclasses.replace(context, scorer=scorer))


@pytest.mark.parametrize(
    ("name", "per_prompt", "decodings"),
    [
        ("self_confidence", 3, {"sample"}),
        ("diverse_decoding", 5, {"greedy", "nucleus", "beam"}),
        ("multi_view", 2, {"standard", "brief"}),
        ("self_refinement", 2, {"draft", "refined"}),
        ("self_rewarding", 3, {"sample"}),
        ("greedy_self_training", 1, {"greedy"}),
        ("rejection_sampling", 3, {"sample"}),
    ],
)
def test_pool_shape_and_choice(context, name, per_prompt, decodings):
    pool = pool_for(context, name, n_candidates=3)
    assert pool.schema == pl.Schema(POOL_SCHEMA)
    assert pool.height == N_PROMPTS * per_prompt
    assert set(pool["decoding"]) == decodings
    assert pool["verdict"].is_in(["misbehaving", "aligned", "unparseable"]).all()
    assert pool["reference"].is_not_null().all()
    chosen = pool.group_by("prompt_id").agg(pl.col("chosen").sum())["chosen"]
    if name == "multi_view":
        assert chosen.max() <= 1
    else:
        assert (chosen == 1).all()
        if name != "greedy_self_training":
            best = pool.group_by("prompt_id").agg(pl.col("score").max().alias("best"))
            picked = pool.filter("chosen").join(best, on="prompt_id")
            assert (picked["score"] == picked["best"]).all()


def test_self_confidence_scores_are_mean_logprobs(context):
    pool = pool_for(context, "self_confidence", n_candidates=3)
    assert pool["score"].to_list() == pool["mean_logprob"].to_list()


def test_multi_view_keeps_a_prompt_only_when_views_agree(context):
    pool = pool_for(context, "multi_view")
    for (_,), group in pool.group_by("prompt_id"):
        standard, brief = group.sort("candidate")["answer"].to_list()
        kept = group.filter("chosen").height == 1
        assert kept == (standard is not None and standard == brief)


def test_candidates_do_not_depend_on_batch_size_or_prompt_order(context):
    method = MethodSpec(name="self_confidence", n_candidates=3, temperature=4.0, top_p=1.0)
    one = build_pool(method, context)
    suite = context.suite
    reordered = dataclasses.replace(suite, consistency=list(reversed(suite.consistency)))
    other = build_pool(method, dataclasses.replace(context, suite=reordered, batch_size=2))
    key = ["prompt_id", "candidate"]
    assert one.sort(key)["text"].to_list() == other.sort(key)["text"].to_list()
    assert one["text"].n_unique() > N_PROMPTS  # samples differ within a prompt


def test_a_pool_of_empty_candidates_is_refused(context):
    pool = pool_for(context, "greedy_self_training").with_columns(text=pl.lit(" "))
    with pytest.raises(DataError, match="all 6 candidates are empty"):
        check_pool(pool, "org__greedy_self_training")


def test_label_methods_without_a_scorer_say_so(context):
    with pytest.raises(DataError, match="rejection_sampling needs a scorer"):
        build_pool(MethodSpec(name="rejection_sampling"), context)
