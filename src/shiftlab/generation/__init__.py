"""Generation: batched greedy, nucleus and beam decoding; log-probs of given texts."""

from shiftlab.generation._generate import Generation, generate, gumbel_noise
from shiftlab.generation._scoring import (
    beam_search,
    choice_logprobs,
    expected_score,
    score_continuations,
    score_token_ids,
)

__all__ = [
    "Generation",
    "beam_search",
    "choice_logprobs",
    "expected_score",
    "generate",
    "gumbel_noise",
    "score_continuations",
    "score_token_ids",
]
