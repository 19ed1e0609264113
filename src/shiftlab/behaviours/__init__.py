"""Behaviours: suite types, data formats, scoring rules, judges and evaluation.

>>> from shiftlab.behaviours import load_suite, score_outputs
>>> suite = load_suite("toyworld:reward_hacking")
>>> score_outputs(suite, [e.target for e in suite.eval]).headline["value"]
0.0
"""

from __future__ import annotations

from shiftlab.behaviours._chat_jsonl import load_chat_jsonl_suite
from shiftlab.behaviours._eval import BehaviourRate, evaluate_behaviour, sample_seed
from shiftlab.behaviours._extractors import check_extractor, extract
from shiftlab.behaviours._fetch import fetch_dataset
from shiftlab.behaviours._formats import (
    ChoiceScorer,
    GenericScorer,
    data_home,
    load_generic,
    load_model_written_evals,
    load_suite,
)
from shiftlab.behaviours._jsonl import chat_messages, read_jsonl
from shiftlab.behaviours._judges import (
    CachedJudge,
    HTTPJudge,
    Judge,
    JudgeReply,
    JudgeRequest,
    LocalJudge,
    TokenLogprobs,
    make_judge,
    weighted_label,
)
from shiftlab.behaviours._scoring import (
    SCORING_VERSION,
    BehaviourScorer,
    Metric,
    RuleScorer,
    ScoredOutputs,
    mean_metric,
    rate_metric,
    score_outputs,
    wilson_interval,
)
from shiftlab.behaviours._strength import (
    Stability,
    Strength,
    sampled_strength,
    stability,
)
from shiftlab.behaviours._study_scorers import (
    EmergentMisalignmentScorer,
    RewardHackingScorer,
    SpuriousCorrelationScorer,
    SycophancyScorer,
    gameable_count,
)
from shiftlab.behaviours._types import (
    DEFAULT_RUBRIC,
    Example,
    MethodPrompts,
    PairExample,
    Suite,
    Verdict,
    View,
)

__all__ = [
    "DEFAULT_RUBRIC",
    "SCORING_VERSION",
    "BehaviourRate",
    "BehaviourScorer",
    "CachedJudge",
    "ChoiceScorer",
    "EmergentMisalignmentScorer",
    "Example",
    "GenericScorer",
    "HTTPJudge",
    "Judge",
    "JudgeReply",
    "JudgeRequest",
    "LocalJudge",
    "MethodPrompts",
    "Metric",
    "PairExample",
    "RewardHackingScorer",
    "RuleScorer",
    "ScoredOutputs",
    "SpuriousCorrelationScorer",
    "Stability",
    "Strength",
    "Suite",
    "SycophancyScorer",
    "TokenLogprobs",
    "Verdict",
    "View",
    "chat_messages",
    "check_extractor",
    "data_home",
    "evaluate_behaviour",
    "extract",
    "fetch_dataset",
    "gameable_count",
    "load_chat_jsonl_suite",
    "load_generic",
    "load_model_written_evals",
    "load_suite",
    "make_judge",
    "mean_metric",
    "rate_metric",
    "read_jsonl",
    "sample_seed",
    "sampled_strength",
    "score_outputs",
    "stability",
    "weighted_label",
    "wilson_interval",
]
