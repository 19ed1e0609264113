"""Behaviour evaluation: generate on the eval split, score each output, report the rate."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from shiftlab.behaviours._formats import ChoiceScorer
from shiftlab.behaviours._scoring import ScoredOutputs, check_judge, score_outputs
from shiftlab.behaviours._types import Suite
from shiftlab.errors import ShiftlabError

if TYPE_CHECKING:
    from shiftlab.judges import Judge


@dataclass(frozen=True)
class BehaviourRate:
    """A behaviour's headline metric on one model: its value and 95% CI, and the counts.

    For most behaviours ``rate`` is the misbehaviour rate over judged outputs; ``metric``
    and ``unit`` say what it is. ``rate`` and the CI are None when nothing could be judged.
    """

    rate: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_misbehaving: int
    n_unparseable: int
    metric: str = "misbehaviour_rate"
    unit: str = "rate"

    @classmethod
    def from_scored(cls, scored: ScoredOutputs) -> BehaviourRate:
        """The headline of :func:`score_outputs`' result."""
        head = scored.headline
        return cls(
            head["value"],
            head["ci_low"],
            head["ci_high"],
            scored.rows.height,
            int((scored.rows["verdict"] == "misbehaving").sum()),
            int((scored.rows["verdict"] == "unparseable").sum()),
            head["metric"],
            head["unit"],
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_behaviour(
    model: Any,
    tokenizer: Any,
    suite: Suite,
    *,
    judge: Judge | None = None,
    max_new_tokens: int = 24,
    batch_size: int = 64,
    n_prompts: int | None = None,
    progress: bool = False,
) -> tuple[pl.DataFrame, BehaviourRate]:
    """Greedy-decode the eval split (or, for choice-scored suites, score each answer
    choice) and score the outputs with the suite's rules and ``judge`` (default: the
    suite's own judge).

    Returns per-sample rows (``sample_id, prompt, output, verdict, score, value, group,
    detail, mean_logprob``, the last null for choice-scored suites) and the headline
    metric. Unparseable outputs are counted and reported, never scored as zero.

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
        raise ShiftlabError(f"the {suite.behaviour} suite from {suite.source} has no scorer")
    examples = list(suite.eval[:n_prompts] if n_prompts else suite.eval)
    if not examples:
        raise ShiftlabError(f"the {suite.behaviour} suite from {suite.source} has no eval prompts")
    judge = judge or suite.judge
    check_judge(suite, examples, judge)  # before decoding, which may take long
    # Imported here: generation imports the suite types from this package.
    from shiftlab.generation import choice_logprobs, generate

    outputs: list[Any]
    if isinstance(suite.scorer, ChoiceScorer):
        outputs = choice_logprobs(
            model, tokenizer, [e.messages for e in examples],
            [suite.scorer.options(e) for e in examples], prefix=suite.scorer.prefix,
            batch_size=batch_size,
        )  # fmt: skip
        texts = [max(o, key=o.__getitem__).strip() for o in outputs]
        logprobs: list[float | None] = [None] * len(outputs)  # nothing was generated
    else:
        generations = generate(
            model,
            tokenizer,
            [e.messages for e in examples],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=progress,
        )
        outputs = texts = [g.text for g in generations]
        logprobs = [g.mean_logprob for g in generations]
    scored = score_outputs(suite, outputs, judge=judge, examples=examples)
    rows = scored.rows.select(
        "sample_id",
        pl.Series("prompt", [e.prompt for e in examples], pl.String),
        pl.Series("output", texts, pl.String),
        "verdict",
        "score",
        "value",
        "group",
        "detail",
        pl.Series("mean_logprob", logprobs, pl.Float64),
    )
    return rows, BehaviourRate.from_scored(scored)


@dataclass(frozen=True)
class PairedRates:
    """A model's headline metric before and after on the same eval prompts.

    ``n_judged``: prompts judged both before and after (what the delta rests on);
    ``n_unparseable``: the after-model's outputs that could not be judged; ``n_eval``:
    prompts the headline covers (those not excluded by design). The rates are None when
    no prompt was judged both times.
    """

    before: float | None
    after: float | None
    n_judged: int
    n_unparseable: int
    n_eval: int

    @property
    def delta(self) -> float | None:
        return None if self.before is None or self.after is None else self.after - self.before


def headline_values(rows: pl.DataFrame, unit: str = "rate") -> pl.Series:
    """Each eval row's part in the headline metric: 1 or 0 for a misbehaving or aligned
    verdict when the headline is a rate, the row's value otherwise (a choice-scored
    probability); null for a row that was not judged.

    >>> rows = pl.DataFrame({"verdict": ["misbehaving", "aligned", "unparseable"],
    ...                      "value": [0.9, 0.2, None]})
    >>> headline_values(rows).to_list(), headline_values(rows, "probability").to_list()
    ([1.0, 0.0, None], [0.9, 0.2, None])
    """
    verdict = pl.col("verdict")
    value: pl.Expr = (
        pl.when(verdict == "misbehaving").then(1.0).when(verdict == "aligned").then(0.0)
        if unit == "rate"
        else pl.when(verdict.is_in(["unparseable", "excluded"])).then(None)
        .otherwise(pl.col("value"))
    )  # fmt: skip
    return rows.select(value.alias("value")).to_series()


def paired_rates(before: pl.DataFrame, after: pl.DataFrame, unit: str = "rate") -> PairedRates:
    """The headline metric of two evaluations (rows of :func:`evaluate_behaviour`) over
    the eval prompts judged in both, so before and after share one denominator.

    >>> def rows(*verdicts):
    ...     return pl.DataFrame({"sample_id": list("abcd"), "verdict": verdicts,
    ...                          "value": [None] * 4}, schema_overrides={"value": pl.Float64})
    >>> before = rows("misbehaving", "unparseable", "misbehaving", "aligned")
    >>> after = rows("aligned", "misbehaving", "unparseable", "aligned")
    >>> paired = paired_rates(before, after)
    >>> paired.before, paired.after, paired.delta, paired.n_judged, paired.n_unparseable
    (0.5, 0.0, -0.5, 2, 1)
    """
    both = pl.DataFrame({
        "sample_id": before["sample_id"], "before": headline_values(before, unit),
        "excluded": before["verdict"] == "excluded",
    }).join(
        pl.DataFrame({"sample_id": after["sample_id"], "after": headline_values(after, unit),
                      "unparseable": after["verdict"] == "unparseable"}),
        on="sample_id", how="inner",
    )  # fmt: skip
    judged = both.drop_nulls(["before", "after"])
    present = judged.height > 0
    return PairedRates(
        before=float(judged["before"].mean()) if present else None,  # type: ignore[arg-type]
        after=float(judged["after"].mean()) if present else None,  # type: ignore[arg-type]
        n_judged=judged.height,
        n_unparseable=int(both["unparseable"].sum()),
        n_eval=int((~both["excluded"]).sum()),
    )
