"""Behaviour evaluation: generate on the eval split, score each output, report the rate."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from shiftlab.behaviours._types import Suite
from shiftlab.errors import ShiftlabError

EVAL_SCHEMA = {
    "sample_id": pl.String,
    "prompt": pl.String,
    "output": pl.String,
    "verdict": pl.String,
    "score": pl.Float64,
    "mean_logprob": pl.Float64,
}


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default).

    >>> [round(x, 3) for x in wilson_interval(5, 10)]
    [0.237, 0.763]
    """
    if n <= 0:
        raise ValueError("a proportion needs at least one observation")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class BehaviourRate:
    """The misbehaviour rate over judged outputs, its 95% Wilson CI and the counts.

    ``rate`` and the CI are None when no output could be judged.
    """

    rate: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_misbehaving: int
    n_unparseable: int

    @classmethod
    def from_rows(cls, rows: pl.DataFrame) -> BehaviourRate:
        """Summarise per-sample rows with a ``verdict`` column."""
        n_bad = int((rows["verdict"] == "misbehaving").sum())
        n_unparseable = int((rows["verdict"] == "unparseable").sum())
        judged = rows.height - n_unparseable
        if judged == 0:
            return cls(None, None, None, rows.height, 0, n_unparseable)
        low, high = wilson_interval(n_bad, judged)
        return cls(n_bad / judged, low, high, rows.height, n_bad, n_unparseable)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_behaviour(
    model: Any,
    tokenizer: Any,
    suite: Suite,
    *,
    max_new_tokens: int = 24,
    batch_size: int = 64,
    n_prompts: int | None = None,
    progress: bool = False,
) -> tuple[pl.DataFrame, BehaviourRate]:
    """Greedy-decode the eval split and score each output with the suite's scorer.

    Returns per-sample rows (``sample_id, prompt, output, verdict, score, mean_logprob``)
    and the rate. Unparseable outputs are counted and reported, never scored as zero.

    >>> from shiftlab.models import load_causal_lm
    >>> from shiftlab.spec import ToyworldSpec
    >>> from shiftlab.toyworld import build_toyworld_suite
    >>> model, tok = load_causal_lm("toyworld:small")
    >>> suite = build_toyworld_suite("sycophancy", ToyworldSpec(n_eval=16))
    >>> rows, rate = evaluate_behaviour(model, tok, suite)
    >>> rows.height, rate.rate
    (16, 0.0)
    """
    if suite.scorer is None:
        raise ShiftlabError(
            f"the {suite.behaviour} suite from {suite.source} has no scorer: scoring rules for "
            "real-data suites are not implemented yet"
        )
    examples = list(suite.eval[:n_prompts] if n_prompts else suite.eval)
    if not examples:
        raise ShiftlabError(f"the {suite.behaviour} suite from {suite.source} has no eval prompts")
    # Imported here: generation imports the suite types from this package.
    from shiftlab.generation import generate

    outputs = generate(
        model,
        tokenizer,
        [e.messages for e in examples],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
    )
    verdicts = [suite.scorer(e, g.text) for e, g in zip(examples, outputs, strict=True)]
    rows = pl.DataFrame(
        {
            "sample_id": [e.id for e in examples],
            "prompt": [e.prompt for e in examples],
            "output": [g.text for g in outputs],
            "verdict": [v.label for v in verdicts],
            "score": [v.score for v in verdicts],
            "mean_logprob": [g.mean_logprob for g in outputs],
        },
        schema=EVAL_SCHEMA,
    )
    return rows, BehaviourRate.from_rows(rows)
