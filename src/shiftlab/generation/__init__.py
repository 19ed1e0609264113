"""Generation: batched greedy and seeded sampling with per-token log-probs."""

from shiftlab.generation._generate import Generation, generate, gumbel_noise

__all__ = ["Generation", "generate", "gumbel_noise"]
