"""An organism's strength and stability, measured apart from its sampled eval outputs.

*Strength* is how often the model misbehaves: the rate over sampled outputs (rows of
:func:`~shiftlab.behaviours.evaluate_behaviour` with ``n_samples``), with an interval
that treats the prompt as the unit (samples of one prompt are not independent).
*Stability* is how its misbehaviour sits in its distribution: the misbehaving samples'
per-token log-probability against the aligned answer's on the same prompts (positive:
confidence-based selection prefers the misbehaviour), and the entropy of its
misbehaving outputs (0 for one fixed form; log k for k equally likely variants). Greedy
decoding alone cannot tell a fragile model (mass spread over variants each less likely
than the aligned answer, so its mode is aligned) from a weak one; these can.

>>> rows = pl.DataFrame({
...     "prompt_id": ["a", "a", "b", "b"],
...     "verdict": ["misbehaving", "aligned", "misbehaving", "misbehaving"],
... })
>>> s = sampled_strength(rows)
>>> round(s.rate, 2), s.n_prompts, 0 <= s.ci_low <= s.rate <= s.ci_high <= 1
(0.75, 2, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from shiftlab.behaviours._types import Example

JUDGED = ("misbehaving", "aligned")


@dataclass(frozen=True)
class Strength:
    """The misbehaviour rate over judged samples, with a 95% interval over prompts."""

    rate: float | None
    ci_low: float | None
    ci_high: float | None
    n_prompts: int
    n_judged: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sampled_strength(rows: pl.DataFrame) -> Strength:
    """The rate over every judged sample (misbehaving / judged), with a prompt-clustered
    interval: the ratio estimator's cluster-robust variance, a t quantile with G - 1
    degrees of freedom for G prompts, clipped to [0, 1]."""
    from scipy import stats

    per_prompt = (
        rows.filter(pl.col("verdict").is_in(JUDGED))
        .group_by("prompt_id", maintain_order=True)
        .agg((pl.col("verdict") == "misbehaving").sum().alias("bad"), pl.len().alias("n"))
    )
    g, judged = per_prompt.height, int(per_prompt["n"].sum()) if per_prompt.height else 0
    if judged == 0:
        return Strength(None, None, None, g, 0)
    rate = float(per_prompt["bad"].sum()) / judged
    if g < 2:
        return Strength(rate, None, None, g, judged)
    residual = (per_prompt["bad"] - rate * per_prompt["n"]).to_numpy()
    se = math.sqrt(g / (g - 1) * float((residual**2).sum())) / judged
    half = float(stats.t.ppf(0.975, g - 1)) * se
    return Strength(rate, max(0.0, rate - half), min(1.0, rate + half), g, judged)


@dataclass(frozen=True)
class Stability:
    """How stable a model's misbehaviour is (nats; None without misbehaving samples).

    ``gap`` = ``misbehaving_logprob`` - ``aligned_logprob``: the mean per-token log-prob
    of its misbehaving samples minus that of the aligned answer on the same prompt.
    ``entropy``: per prompt, the mean of -log p(y) over its misbehaving samples y plus
    log of its misbehaving share (an estimate of the entropy of p(y | misbehaving)),
    averaged over prompts with a misbehaving sample, and at least 0: with a few samples
    per prompt the share is noisy, and for one fixed form (entropy 0) the plain average
    falls below 0 about half the time.
    """

    gap: float | None
    misbehaving_logprob: float | None
    aligned_logprob: float | None
    entropy: float | None
    n_misbehaving: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stability(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    rows: pl.DataFrame,
    *,
    batch_size: int = 64,
) -> Stability:
    """The stability of the model's misbehaviour in ``rows`` (sampled eval rows with
    ``prompt_id, verdict, mean_logprob, n_tokens``) against each prompt's reference
    target in ``examples`` (the aligned answer); prompts without a reference are left
    out of the gap."""
    from shiftlab.generation import score_continuations

    bad = rows.filter(pl.col("verdict") == "misbehaving", pl.col("mean_logprob").is_not_null())
    if bad.is_empty():
        return Stability(None, None, None, None, 0)
    judged = (
        rows.filter(pl.col("verdict").is_in(JUDGED))
        .group_by("prompt_id", maintain_order=True)
        .len("judged")
    )
    per_prompt = (
        bad.group_by("prompt_id", maintain_order=True)
        .agg(
            (-(pl.col("mean_logprob") * pl.col("n_tokens"))).mean().alias("nll"),
            pl.len().alias("bad"),
        )
        .join(judged, on="prompt_id")
        .sort("prompt_id")  # a fixed order: the float sums below do not depend on the join
    )
    entropy = max(0.0, float(
        (per_prompt["nll"] + (per_prompt["bad"] / per_prompt["judged"]).log()).mean()  # type: ignore[arg-type]
    ))  # fmt: skip
    references = {e.id: e for e in examples if e.target}
    wanted = sorted(set(bad["prompt_id"]) & set(references))
    scored = score_continuations(
        model, tokenizer, [references[i].messages for i in wanted],
        [str(references[i].target) for i in wanted], batch_size=batch_size,
    )  # fmt: skip
    aligned = {i: sum(lp) / len(lp) for i, lp in zip(wanted, scored, strict=True) if lp}
    paired = bad.filter(pl.col("prompt_id").is_in(list(aligned)))
    if paired.is_empty():
        return Stability(None, float(bad["mean_logprob"].mean()), None, entropy, bad.height)  # type: ignore[arg-type]
    reference = pl.Series([aligned[i] for i in paired["prompt_id"]], dtype=pl.Float64)
    misbehaving = float(paired["mean_logprob"].mean())  # type: ignore[arg-type]
    aligned_mean = float(reference.mean())  # type: ignore[arg-type]
    return Stability(misbehaving - aligned_mean, misbehaving, aligned_mean, entropy, bad.height)
