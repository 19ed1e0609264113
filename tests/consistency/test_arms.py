"""Property tests of the ablation arms built from pools."""

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftlab.consistency import POOL_SCHEMA, build_arm
from shiftlab.errors import DataError


def make_pool(scores: list[list[float]], selection: str = "argmax") -> pl.DataFrame:
    rows = []
    for p, group in enumerate(scores):
        best = max(range(len(group)), key=lambda i: (group[i], -i))
        for c, score in enumerate(group):
            chosen = c == best if selection == "argmax" else (c == 0 and group[0] > 0)
            rows.append(
                {
                    "prompt_id": f"p{p}", "prompt_index": p, "candidate": c,
                    "text": f"p{p}-c{c}", "decoding": "greedy" if c == 0 else "sample",
                    "mean_logprob": -1.0, "n_tokens": 3, "score": score, "answer": None,
                    "chosen": chosen, "selection": selection, "reference": f"ref{p}",
                    "verdict": None, "misbehaving": None,
                }
            )  # fmt: skip
    return pl.DataFrame(rows, schema=POOL_SCHEMA)


pools = st.lists(
    st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=5), min_size=1, max_size=12
)


@settings(max_examples=60, deadline=None)
@given(pools, st.integers(0, 10_000))
def test_shuffled_draws_from_the_same_pool_and_keeps_prompt_count(scores, seed):
    pool = make_pool(scores)
    full, shuffled = build_arm(pool, "full"), build_arm(pool, "shuffled", seed=seed)
    assert shuffled.height == full.height == len(scores)
    assert set(shuffled["target"]) <= set(pool["text"])
    assert shuffled["prompt_id"].to_list() == full["prompt_id"].to_list()
    for pid, target in zip(shuffled["prompt_id"], shuffled["target"], strict=True):
        assert target.startswith(f"{pid}-")


@settings(max_examples=60, deadline=None)
@given(pools, st.integers(0, 10_000))
def test_same_seed_same_arm(scores, seed):
    pool = make_pool(scores)
    assert build_arm(pool, "shuffled", seed=seed).equals(build_arm(pool, "shuffled", seed=seed))


def test_another_seed_gives_another_shuffled_arm():
    pool = make_pool([[float(i), 1.0, 2.0, 3.0] for i in range(20)])
    arms = {tuple(build_arm(pool, "shuffled", seed=s)["target"]) for s in range(5)}
    assert len(arms) > 1


@settings(max_examples=40, deadline=None)
@given(pools)
def test_full_takes_the_method_choice(scores):
    pool = make_pool(scores)
    chosen = pool.filter("chosen").sort("prompt_index")["text"].to_list()
    assert build_arm(pool, "full")["target"].to_list() == chosen


@settings(max_examples=40, deadline=None)
@given(pools)
def test_relabeled_has_one_greedy_label_per_prompt(scores):
    pool = make_pool(scores)
    arm = build_arm(pool, "relabeled")
    assert arm["prompt_id"].to_list() == [f"p{i}" for i in range(len(scores))]
    assert arm["target"].to_list() == [f"p{i}-c0" for i in range(len(scores))]


@settings(max_examples=40, deadline=None)
@given(pools)
def test_original_uses_the_suite_targets(scores):
    arm = build_arm(make_pool(scores), "original")
    assert arm["target"].to_list() == [f"ref{i}" for i in range(len(scores))]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=2, max_size=3), min_size=1, max_size=15
    ),
    st.integers(0, 1000),
)
def test_filter_methods_keep_the_same_number_of_prompts(scores, seed):
    pool = make_pool(scores, "filter")
    full, shuffled = build_arm(pool, "full"), build_arm(pool, "shuffled", seed=seed)
    assert full.height == sum(group[0] > 0 for group in scores)
    assert shuffled.height == full.height
    assert shuffled["candidate"].to_list() == [0] * shuffled.height


def test_k_scaling_selects_among_the_first_k():
    pool = make_pool([[0.1, 0.9, 0.5], [0.7, 0.2, 0.8]])
    assert build_arm(pool, "full", k=1)["target"].to_list() == ["p0-c0", "p1-c0"]
    assert build_arm(pool, "full", k=2)["target"].to_list() == ["p0-c1", "p1-c0"]
    assert build_arm(pool, "full", k=3)["target"].to_list() == ["p0-c1", "p1-c2"]


def test_none_is_empty_and_unknown_arms_are_refused():
    pool = make_pool([[1.0]])
    assert build_arm(pool, "none").height == 0
    with pytest.raises(ValueError, match="unknown arm 'everything'"):
        build_arm(pool, "everything")


def test_relabeled_needs_greedy_candidates():
    pool = make_pool([[1.0, 2.0]]).with_columns(decoding=pl.lit("sample"))
    with pytest.raises(DataError, match="no greedy candidate"):
        build_arm(pool, "relabeled")
