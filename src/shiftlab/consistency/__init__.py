"""Consistency methods, their candidate pools and the ablation arms built from them."""

from shiftlab.consistency._arms import ARM_SCHEMA, build_arm
from shiftlab.consistency._methods import (
    POOL_SCHEMA,
    PoolContext,
    build_pool,
    candidate_decoding,
    candidate_seed,
    check_pool,
    choose,
    iter_pool,
    resolve_prompts,
)
from shiftlab.consistency._scorers import (
    CandidateScorer,
    JudgeScorer,
    LMJudgeScorer,
    RewardModelScorer,
    make_scorer,
)

__all__ = [
    "ARM_SCHEMA",
    "POOL_SCHEMA",
    "CandidateScorer",
    "JudgeScorer",
    "LMJudgeScorer",
    "PoolContext",
    "RewardModelScorer",
    "build_arm",
    "build_pool",
    "candidate_decoding",
    "candidate_seed",
    "check_pool",
    "choose",
    "iter_pool",
    "make_scorer",
    "resolve_prompts",
]
