"""Generation: batched greedy, nucleus and beam decoding; log-probs of given texts; greedy
replies with top log-probs (what a local judge answers). Each folds a LoRA model's
adapters into its weights while it runs (:func:`folded_adapters`)."""

from shiftlab._folded import folded_adapters
from shiftlab.generation._generate import Generation, generate, gumbel_noise
from shiftlab.generation._greedy import ScoredToken, greedy_top_logprobs
from shiftlab.generation._scoring import (
    LOGPROBS_VERSION,
    beam_search,
    choice_logprobs,
    expected_score,
    label_logprobs,
    score_continuations,
    score_token_ids,
)

__all__ = [
    "LOGPROBS_VERSION",
    "Generation",
    "ScoredToken",
    "beam_search",
    "choice_logprobs",
    "expected_score",
    "folded_adapters",
    "generate",
    "greedy_top_logprobs",
    "gumbel_noise",
    "label_logprobs",
    "score_continuations",
    "score_token_ids",
]
