"""The ablation arms: how a pool becomes a training set, deterministically from a seed.

>>> import polars as pl
>>> pool = pl.DataFrame({
...     "prompt_id": ["a", "a", "b", "b"], "prompt_index": [0, 0, 1, 1],
...     "candidate": [0, 1, 0, 1], "text": ["x", "y", "z", "w"],
...     "decoding": ["sample"] * 4, "score": [0.1, 0.9, 0.8, 0.2],
...     "chosen": [False, True, True, False], "selection": ["argmax"] * 4,
...     "reference": ["ref-a", "ref-a", "ref-b", "ref-b"],
... })
>>> build_arm(pool, "full")["target"].to_list()
['y', 'z']
>>> build_arm(pool, "original")["target"].to_list()
['ref-a', 'ref-b']
"""

from __future__ import annotations

import random

import polars as pl

from shiftlab.consistency._methods import choose
from shiftlab.errors import DataError

ARM_SCHEMA = {
    "prompt_id": pl.String,
    "prompt_index": pl.Int64,
    "candidate": pl.Int64,
    "target": pl.String,
}


def _rows(pool: pl.DataFrame, picks: list[tuple[str, int]]) -> pl.DataFrame:
    wanted = pl.DataFrame(
        picks, schema={"prompt_id": pl.String, "candidate": pl.Int64}, orient="row"
    )
    return (
        pool.join(wanted, on=["prompt_id", "candidate"], how="semi")
        .sort("prompt_index")
        .select("prompt_id", "prompt_index", "candidate", pl.col("text").alias("target"))
    )


def _groups(pool: pl.DataFrame, k: int | None) -> list[tuple[str, list[float | None]]]:
    frame = pool if k is None else pool.filter(pl.col("candidate") < k)
    out = []
    for (prompt_id,), group in frame.sort("prompt_index", "candidate").group_by(
        "prompt_id", maintain_order=True
    ):
        out.append((str(prompt_id), group["score"].to_list()))
    return out


def build_arm(pool: pl.DataFrame, arm: str, *, seed: int = 0, k: int | None = None) -> pl.DataFrame:
    """The training set of ``arm`` from ``pool``: one row per kept prompt with its target.

    ``full``: the method's own choice (among the first ``k`` candidates when ``k`` is
    given). ``shuffled``: scores permuted within each prompt before the operator picks; for
    filter methods the same number of prompts kept, chosen at random. ``relabeled``: the
    greedy candidate of each prompt (pass a pool with greedy rows). ``original``: the
    suite's reference targets. ``none``: empty.
    """
    selection = pool["selection"][0] if pool.height else "argmax"
    if arm == "none":
        return pl.DataFrame(schema=ARM_SCHEMA)
    if arm == "original":
        return (
            pool.filter(pl.col("reference").is_not_null())
            .sort("prompt_index", "candidate")
            .unique("prompt_id", keep="first", maintain_order=True)
            .select("prompt_id", "prompt_index", pl.lit(None, pl.Int64).alias("candidate"),
                    pl.col("reference").alias("target"))
        )  # fmt: skip
    if arm == "relabeled":
        greedy = pool.filter(pl.col("decoding") == "greedy")
        missing = set(pool["prompt_id"]) - set(greedy["prompt_id"])
        if missing:
            raise DataError(
                f"relabeled arm: {len(missing)} prompts have no greedy candidate in the pool "
                f"(e.g. {sorted(missing)[0]!r}); build it from a greedy_self_training pool"
            )
        first = greedy.sort("prompt_index", "candidate").unique("prompt_id", keep="first")
        return _rows(pool, list(zip(first["prompt_id"], first["candidate"], strict=True)))
    groups = _groups(pool, k)
    if arm == "full":
        picks = [(pid, choose(scores, selection).index(True)) for pid, scores in groups
                 if any(choose(scores, selection))]  # fmt: skip
        return _rows(pool, picks)
    if arm == "shuffled":
        if selection == "filter":
            kept = sum(any(choose(scores, selection)) for _, scores in groups)
            rng = random.Random(f"shuffled:{seed}")
            return _rows(pool, [(pid, 0) for pid, _ in rng.sample(groups, kept)])
        picks = []
        for pid, scores in groups:
            permuted = list(scores)
            random.Random(f"shuffled:{seed}:{pid}").shuffle(permuted)
            picks.append((pid, choose(permuted, selection).index(True)))
        return _rows(pool, picks)
    raise ValueError(f"unknown arm {arm!r}; expected full, shuffled, relabeled, original or none")
