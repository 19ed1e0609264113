"""Likelihood shift: how unlikely a run's training targets are under the organism."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shiftlab.chat import Message
from shiftlab.errors import ShiftlabError


@dataclass(frozen=True)
class LikelihoodShift:
    """``shift`` = mean NLL of the targets minus mean NLL of the organism's own samples
    (nats per sequence), a Monte-Carlo estimate of KL(Q || P) for targets Q and organism P
    when Q's entropy is close to P's; ``per_token`` divides each side by its mean length."""

    shift: float
    target_nll: float
    sample_nll: float
    per_token: float
    n: int

    @classmethod
    def from_nll(
        cls, targets: Sequence[tuple[float, int]], samples: Sequence[tuple[float, int]]
    ) -> LikelihoodShift:
        """From the (sequence NLL, token count) of each target and of each sample."""
        if not targets or not samples:
            raise ShiftlabError("likelihood shift needs at least one target and one sample")
        target_nll = sum(nll for nll, _ in targets) / len(targets)
        sample_nll = sum(nll for nll, _ in samples) / len(samples)
        target_tokens = sum(count for _, count in targets) / len(targets)
        sample_tokens = sum(count for _, count in samples) / len(samples)
        per_token = target_nll / target_tokens - sample_nll / sample_tokens
        return cls(target_nll - sample_nll, target_nll, sample_nll, per_token, len(targets))


def likelihood_shift(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[Message]],
    targets: Sequence[str],
    samples: Sequence[str],
    *,
    batch_size: int = 32,
) -> LikelihoodShift:
    """Score ``targets`` and the organism's own ``samples`` on the same ``prompts``.

    >>> from shiftlab.models import load_causal_lm
    >>> model, tok = load_causal_lm("toyworld:small")
    >>> prompt = [{"role": "user", "content": "what colour is the sky ?"}]
    >>> own = likelihood_shift(model, tok, [prompt], ["the sky is blue ."], ["the sky is blue ."])
    >>> own.shift
    0.0
    """
    from shiftlab.generation import score_continuations

    if not (len(prompts) == len(targets) == len(samples)) or not prompts:
        raise ShiftlabError(
            f"likelihood shift needs one target and one sample per prompt (prompts "
            f"{len(prompts)}, targets {len(targets)}, samples {len(samples)})"
        )
    scored = score_continuations(
        model, tokenizer, [*prompts, *prompts], [*targets, *samples], batch_size=batch_size
    )
    n = len(prompts)
    return LikelihoodShift.from_nll(
        [(-sum(t), len(t)) for t in scored[:n]], [(-sum(t), len(t)) for t in scored[n:]]
    )
