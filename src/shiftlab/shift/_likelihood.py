"""Likelihood shift: how much less likely a run's training targets are, per token, under
the organism than the organism's own samples drawn the way the targets were."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shiftlab.chat import Message
from shiftlab.errors import ShiftlabError


@dataclass(frozen=True)
class Decoding:
    """How a set of texts was decoded: greedy (``temperature`` 0) or sampled at
    ``temperature`` with nucleus ``top_p``. ``key`` names it in a samples table.

    >>> Decoding(0.0).key, Decoding(1.0, 0.95).key
    ('greedy', 't1_p0.95')
    """

    temperature: float
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def key(self) -> str:
        return "greedy" if self.greedy else f"t{self.temperature:g}_p{self.top_p:g}"

    def n_samples(self, wanted: int) -> int:
        """How many own samples per prompt are worth drawing: greedy decoding gives the
        same text every time."""
        return 1 if self.greedy else wanted


@dataclass(frozen=True)
class NllGap:
    """The organism's per-token NLL of the targets minus that of its own samples on the
    same prompts (nats per token), averaged over prompts, with a 95% t interval over
    prompts (None with one prompt; zero width when every prompt's gap is the same).

    Samples drawn the way the targets were (the same decoding) make the two sides
    comparable: a greedy target against the organism's own greedy answer gives 0. It is
    a gap in cross-entropy, not a KL divergence.
    """

    estimate: float
    ci_low: float | None
    ci_high: float | None
    target_nll: float
    sample_nll: float
    n: int

    @classmethod
    def from_nll(
        cls,
        targets: Sequence[tuple[float, int]],
        samples: Sequence[Sequence[tuple[float, int]]],
    ) -> NllGap:
        """From each target's (sequence NLL, token count) and, per target, the same for
        each of the organism's own samples on its prompt.

        >>> gap = NllGap.from_nll([(6.0, 3), (4.0, 2)], [[(3.0, 3), (2.0, 2)], [(2.0, 2)]])
        >>> gap.estimate, gap.n, gap.ci_low == gap.ci_high == 1.0
        (1.0, 2, True)
        """
        if not targets or len(targets) != len(samples) or not all(samples):
            raise ShiftlabError(
                f"an NLL gap needs at least one own sample for each of its targets (targets "
                f"{len(targets)}, sample sets {len(samples)})"
            )
        from scipy import stats

        per_target = [nll / max(count, 1) for nll, count in targets]
        per_sample = [sum(nll / max(count, 1) for nll, count in own) / len(own) for own in samples]
        gaps = [t - s for t, s in zip(per_target, per_sample, strict=True)]
        n = len(gaps)
        estimate = sum(gaps) / n
        low = high = None
        if n > 1:
            sd = math.sqrt(sum((g - estimate) ** 2 for g in gaps) / (n - 1))
            half = 0.0 if sd / math.sqrt(n) < 1e-12 else (
                float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n))  # fmt: skip
            low, high = estimate - half, estimate + half
        return cls(estimate, low, high, sum(per_target) / n, sum(per_sample) / n, n)


def nll_gap(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[Message]],
    targets: Sequence[str],
    samples: Sequence[Sequence[str]],
    *,
    batch_size: int = 32,
) -> NllGap:
    """Score ``targets`` and, per prompt, the organism's own ``samples``.

    >>> from shiftlab.models import load_causal_lm
    >>> model, tok = load_causal_lm("toyworld:small")
    >>> prompt = [{"role": "user", "content": "what colour is the sky ?"}]
    >>> nll_gap(model, tok, [prompt], ["the sky is blue ."], [["the sky is blue ."]]).estimate
    0.0
    """
    from shiftlab.generation import score_continuations

    if not (len(prompts) == len(targets) == len(samples)) or not prompts:
        raise ShiftlabError(
            f"an NLL gap needs a target and its own samples per prompt (prompts "
            f"{len(prompts)}, targets {len(targets)}, sample sets {len(samples)})"
        )
    own = [(p, s) for p, group in zip(prompts, samples, strict=True) for s in group]
    scored = score_continuations(
        model, tokenizer, [*prompts, *(p for p, _ in own)], [*targets, *(s for _, s in own)],
        batch_size=batch_size,
    )  # fmt: skip
    counted = [(-sum(t), len(t)) for t in scored]
    grouped, at = [], len(prompts)
    for group in samples:
        grouped.append(counted[at : at + len(group)])
        at += len(group)
    return NllGap.from_nll(counted[: len(prompts)], grouped)
