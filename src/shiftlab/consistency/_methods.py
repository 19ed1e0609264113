"""The label methods: each turns an organism and a suite's consistency prompts into a pool.

A pool has one row per candidate: the prompt, the candidate's text and how it was decoded,
its mean log-prob, the method's score, whether the method chose it, the suite's reference
target and the behaviour scorer's verdict on it (for the eta(s) diagnostic).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
from tqdm.auto import tqdm

from shiftlab.behaviours import Example, MethodPrompts, Suite, Verdict, View
from shiftlab.chat import Message
from shiftlab.consistency._scorers import CandidateScorer, LMJudgeScorer
from shiftlab.errors import DataError
from shiftlab.extractors import extract
from shiftlab.generation import Generation, beam_search, generate
from shiftlab.shift import Decoding
from shiftlab.spec import MethodSpec

POOL_SCHEMA: dict[str, Any] = {
    "prompt_id": pl.String,
    "prompt_index": pl.Int64,
    "candidate": pl.Int64,
    "text": pl.String,
    "decoding": pl.String,
    "mean_logprob": pl.Float64,
    "n_tokens": pl.Int64,
    "score": pl.Float64,
    "answer": pl.String,
    "chosen": pl.Boolean,
    "selection": pl.String,
    "reference": pl.String,
    "verdict": pl.String,
    "misbehaving": pl.Float64,
}


def candidate_decoding(method: MethodSpec) -> Decoding:
    """How ``method`` decodes its candidates, so the organism's own samples can be drawn
    the same way: sampled methods at their ``temperature`` and ``top_p``
    (diverse_decoding: its nucleus candidates' settings; its greedy and beam candidates
    are near-greedy), the others greedy.

    >>> candidate_decoding(MethodSpec(name="self_confidence", temperature=0.7)).key
    't0.7_p0.95'
    >>> candidate_decoding(MethodSpec(name="multi_view")).key
    'greedy'
    """
    if method.facts.sampled:
        return Decoding(method.temperature, method.top_p)
    return Decoding(0.0)


def candidate_seed(seed: int, prompt_id: str, candidate: int) -> int:
    """The sampling seed of one candidate: a function of (seed, prompt, index) only."""
    digest = hashlib.blake2b(f"{seed}:{prompt_id}:{candidate}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class _Candidate:
    generation: Generation
    decoding: str
    score: float | None = None
    answer: str | None = None


@dataclass
class PoolContext:
    """What a method needs besides its spec: the model, its scorer and decoding limits."""

    model: Any
    tokenizer: Any
    suite: Suite
    seed: int
    max_new_tokens: int = 32
    batch_size: int = 64
    scorer: CandidateScorer | None = None


def _with_view(messages: Sequence[Message], template: str) -> tuple[dict[str, str], ...]:
    """``messages`` with the last user turn put through a view template."""
    out = [dict(m) for m in messages]
    last = max(i for i, m in enumerate(out) if m["role"] == "user")
    out[last]["content"] = template.replace("{prompt}", out[last]["content"])
    return tuple(out)


def _decode(
    ctx: PoolContext,
    prompts: Sequence[Sequence[Message]],
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seeds: Sequence[int] | None = None,
) -> list[Generation]:
    return generate(
        ctx.model,
        ctx.tokenizer,
        prompts,
        max_new_tokens=ctx.max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seeds=seeds,
        batch_size=ctx.batch_size,
    )


def _samples(
    ctx: PoolContext, examples: Sequence[Example], n: int, temperature: float, top_p: float
) -> list[list[Generation]]:
    prompts = [e.messages for e in examples for _ in range(n)]
    seeds = [candidate_seed(ctx.seed, e.id, j) for e in examples for j in range(n)]
    flat = _decode(ctx, prompts, temperature=temperature, top_p=top_p, seeds=seeds)
    return [flat[i * n : (i + 1) * n] for i in range(len(examples))]


def _scored(
    scorer: CandidateScorer | None,
    examples: Sequence[Example],
    groups: list[list[_Candidate]],
    method: str,
) -> list[list[_Candidate]]:
    if scorer is None:
        raise DataError(f"{method} needs a scorer (set methods[].scorer in the spec)")
    prompts = [e.messages for e, group in zip(examples, groups, strict=True) for _ in group]
    texts = [c.generation.text for group in groups for c in group]
    scores = iter(scorer.score(prompts, texts))
    return [[_Candidate(c.generation, c.decoding, next(scores)) for c in g] for g in groups]


def _messages(examples: Sequence[Example]) -> list[Sequence[Message]]:
    return [e.messages for e in examples]


def _greedy_self_training(
    method: MethodSpec, ctx: PoolContext, examples: Sequence[Example]
) -> list[list[_Candidate]]:
    return [[_Candidate(g, "greedy")] for g in _decode(ctx, _messages(examples))]


def _sampled(
    method: MethodSpec, ctx: PoolContext, examples: Sequence[Example]
) -> list[list[_Candidate]]:
    """N samples per prompt, scored by mean log-prob (self_confidence), by the organism as
    judge unless another scorer is given (self_rewarding), or by the scorer."""
    samples = _samples(ctx, examples, method.n_candidates, method.temperature, method.top_p)
    if method.name == "self_confidence":
        return [[_Candidate(g, "sample", g.mean_logprob) for g in group] for group in samples]
    scorer = ctx.scorer
    if scorer is None and method.name == "self_rewarding":
        prompts = resolve_prompts(method, ctx.suite)
        scorer = LMJudgeScorer(ctx.model, ctx.tokenizer, prompts, name="self")
    groups = [[_Candidate(g, "sample") for g in group] for group in samples]
    return _scored(scorer, examples, groups, method.name)


def _diverse_decoding(
    method: MethodSpec, ctx: PoolContext, examples: Sequence[Example]
) -> list[list[_Candidate]]:
    greedy = _decode(ctx, _messages(examples))
    nucleus = _samples(ctx, examples, method.n_nucleus, method.temperature, method.top_p)
    beams = beam_search(
        ctx.model,
        ctx.tokenizer,
        _messages(examples),
        beam_width=method.beam_width,
        max_new_tokens=ctx.max_new_tokens,
        batch_size=max(1, ctx.batch_size // method.beam_width),
    )
    groups = [
        [_Candidate(g, "greedy")]
        + [_Candidate(s, "nucleus") for s in samples]
        + [_Candidate(b, "beam") for b in beam]
        for g, samples, beam in zip(greedy, nucleus, beams, strict=True)
    ]
    return _scored(ctx.scorer, examples, groups, method.name)


def _self_refinement(
    method: MethodSpec, ctx: PoolContext, examples: Sequence[Example]
) -> list[list[_Candidate]]:
    """A greedy draft, then the organism's greedy refinement of it (always chosen)."""
    refinement = {"role": "user", "content": resolve_prompts(method, ctx.suite).refinement}
    drafts = _decode(ctx, _messages(examples))
    turns = [
        (*e.messages, {"role": "assistant", "content": d.text}, refinement)
        for e, d in zip(examples, drafts, strict=True)
    ]
    refined = _decode(ctx, turns)
    return [
        [_Candidate(d, "draft", 0.0), _Candidate(r, "refined", 1.0)]
        for d, r in zip(drafts, refined, strict=True)
    ]


def _multi_view(
    method: MethodSpec, ctx: PoolContext, examples: Sequence[Example]
) -> list[list[_Candidate]]:
    """One greedy answer per view; a view scores 1 when its answer equals the standard
    view's, the standard view scores the share of views that agree with it."""
    views = resolve_prompts(method, ctx.suite).views
    per_view = [
        _decode(ctx, [_with_view(e.messages, view.template) for e in examples]) for view in views
    ]
    groups = []
    for outputs in zip(*per_view, strict=True):
        answers = [extract(v.extractor, o.text) for v, o in zip(views, outputs, strict=True)]
        agree = [float(a is not None and a == answers[0]) for a in answers[1:]]
        scores = [sum(agree) / len(agree), *agree]
        groups.append(
            [
                _Candidate(o, v.name, score, answer)
                for v, o, score, answer in zip(views, outputs, scores, answers, strict=True)
            ]
        )
    return groups


_GENERATORS = {
    "self_confidence": _sampled,
    "self_rewarding": _sampled,
    "rejection_sampling": _sampled,
    "diverse_decoding": _diverse_decoding,
    "multi_view": _multi_view,
    "self_refinement": _self_refinement,
    "greedy_self_training": _greedy_self_training,
}


def resolve_prompts(method: MethodSpec, suite: Suite) -> MethodPrompts:
    """The suite's method prompts with the method's own overrides applied."""
    overrides: dict[str, Any] = {}
    if method.views is not None:
        overrides["views"] = tuple(View(v.name, v.template, v.extractor) for v in method.views)
    if method.refinement_prompt is not None:
        overrides["refinement"] = method.refinement_prompt
    if method.rubric is not None:
        overrides["rubric"] = Path(method.rubric).read_text(encoding="utf-8")
    if method.score_prefix is not None:
        overrides["score_prefix"] = method.score_prefix
    if method.score_tokens is not None:
        overrides["score_tokens"] = tuple(method.score_tokens)
    return replace(suite.prompts, **overrides)


def choose(scores: Sequence[float | None], selection: str) -> list[bool]:
    """The operator: argmax of the scores (first wins ties), or keep the standard view
    (candidate 0) when its score says another view agreed."""
    if selection == "filter":
        return [i == 0 and (scores[0] or 0.0) > 0 for i in range(len(scores))]
    values = [float("-inf") if s is None else s for s in scores]
    best = max(range(len(values)), key=lambda i: (values[i], -i))
    return [i == best for i in range(len(values))]


def iter_pool(
    method: MethodSpec,
    ctx: PoolContext,
    *,
    chunk_size: int = 64,
    progress: bool = False,
) -> Iterator[pl.DataFrame]:
    """The pool of ``method`` on the suite's consistency prompts, one frame per chunk of
    prompts (so a long pool streams to disk with bounded memory)."""
    selection = method.facts.selection
    if selection is None or method.name not in _GENERATORS:
        raise ValueError(f"{method.name} is a paired-loss method; it has no pool")
    examples = list(ctx.suite.consistency)
    if not examples:
        raise DataError(f"{ctx.suite.behaviour}: the consistency split is empty")
    starts = range(0, len(examples), chunk_size)
    for start in tqdm(starts, desc=method.name, disable=not progress, leave=False):
        chunk = examples[start : start + chunk_size]
        groups = _GENERATORS[method.name](method, ctx, chunk)
        verdicts = iter(_verdicts(ctx, chunk, groups))
        rows = []
        for offset, (example, group) in enumerate(zip(chunk, groups, strict=True)):
            chosen = choose([c.score for c in group], selection)
            for j, (candidate, picked) in enumerate(zip(group, chosen, strict=True)):
                verdict = next(verdicts)
                rows.append(
                    {
                        "prompt_id": example.id,
                        "prompt_index": start + offset,
                        "candidate": j,
                        "text": candidate.generation.text,
                        "decoding": candidate.decoding,
                        "mean_logprob": candidate.generation.mean_logprob,
                        "n_tokens": len(candidate.generation.token_ids),
                        "score": candidate.score,
                        "answer": candidate.answer,
                        "chosen": picked,
                        "selection": selection,
                        "reference": example.target,
                        "verdict": verdict.label if verdict else None,
                        "misbehaving": verdict.score if verdict else None,
                    }
                )
        yield pl.DataFrame(rows, schema=POOL_SCHEMA)


def _verdicts(
    ctx: PoolContext, examples: Sequence[Example], groups: list[list[_Candidate]]
) -> list[Verdict | None]:
    """The behaviour scorer's verdict on every candidate, where its rules apply to the
    consistency prompts (they need the fields the eval rows carry) and any judge they ask
    is at hand; None elsewhere."""
    scorer, judge = ctx.suite.scorer, ctx.suite.judge
    flat = [(e, c.generation.text) for e, g in zip(examples, groups, strict=True) for c in g]
    out: list[Verdict | None] = [None] * len(flat)
    if scorer is None or scorer.choices:
        return out
    usable = [i for i, (e, _) in enumerate(flat) if scorer.applies_to(e)]
    picked = [flat[i][0] for i in usable]
    if not usable or (judge is None and scorer.needs_judge(picked)):
        return out
    verdicts = scorer.verdicts(picked, [flat[i][1] for i in usable], judge)
    for i, verdict in zip(usable, verdicts, strict=True):
        out[i] = verdict
    return out


def build_pool(method: MethodSpec, ctx: PoolContext, *, progress: bool = False) -> pl.DataFrame:
    """The whole pool in memory (see :func:`iter_pool` to stream it)."""
    pool = pl.concat(list(iter_pool(method, ctx, progress=progress)))
    check_pool(pool, method.name)
    return pool


def check_pool(pool: pl.DataFrame | pl.LazyFrame, where: str) -> None:
    """Raise when every candidate of a pool is empty (nothing could be trained on).

    Takes a lazy frame too, so a pool streamed to part files is checked without loading it.
    """
    n, longest = (
        pool.lazy()
        .select(pl.len(), pl.col("text").str.strip_chars().str.len_chars().max())
        .collect()
        .row(0)
    )
    if not longest:
        raise DataError(
            f"pool {where}: all {n} candidates are empty; the model generated "
            "nothing (check max_new_tokens and the model's end-of-turn token)"
        )
