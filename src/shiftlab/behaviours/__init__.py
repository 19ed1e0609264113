"""Behaviours: suite types, data formats, scoring rules, judges and evaluation.

>>> from shiftlab.behaviours import load_suite, score_outputs
>>> suite = load_suite("toyworld:reward_hacking")
>>> score_outputs(suite, [e.target for e in suite.eval]).headline["value"]
0.0
"""

from __future__ import annotations

from shiftlab.behaviours._chat_jsonl import load_chat_jsonl_suite
from shiftlab.behaviours._emergent_misalignment import EmergentMisalignmentScorer
from shiftlab.behaviours._eval import (
    BehaviourRate,
    PairedRates,
    evaluate_behaviour,
    headline_values,
    paired_rates,
)
from shiftlab.behaviours._fetch import dataset_registry, fetch_dataset
from shiftlab.behaviours._formats import (
    SUITE_SOURCES,
    ChoiceScorer,
    GenericScorer,
    data_home,
    load_generic,
    load_model_written_evals,
    load_suite,
)
from shiftlab.behaviours._jsonl import chat_messages, read_jsonl
from shiftlab.behaviours._reward_hacking import RewardHackingScorer, gameable_count
from shiftlab.behaviours._scoring import (
    SCORING_VERSION,
    BehaviourScorer,
    Metric,
    RuleScorer,
    ScoredOutputs,
    mean_metric,
    rate_metric,
    score_outputs,
)
from shiftlab.behaviours._spurious_correlation import SpuriousCorrelationScorer
from shiftlab.behaviours._study_rules import STUDY_RULES, study_scorer
from shiftlab.behaviours._sycophancy import SycophancyScorer
from shiftlab.behaviours._types import (
    DEFAULT_RUBRIC,
    Example,
    MethodPrompts,
    PairExample,
    Suite,
    Verdict,
    View,
)
from shiftlab.judges import make_judge

__all__ = [
    "DEFAULT_RUBRIC",
    "SCORING_VERSION",
    "STUDY_RULES",
    "SUITE_SOURCES",
    "BehaviourRate",
    "BehaviourScorer",
    "ChoiceScorer",
    "EmergentMisalignmentScorer",
    "Example",
    "GenericScorer",
    "MethodPrompts",
    "Metric",
    "PairExample",
    "PairedRates",
    "RewardHackingScorer",
    "RuleScorer",
    "ScoredOutputs",
    "SpuriousCorrelationScorer",
    "Suite",
    "SycophancyScorer",
    "Verdict",
    "View",
    "chat_messages",
    "data_home",
    "dataset_registry",
    "evaluate_behaviour",
    "fetch_dataset",
    "gameable_count",
    "headline_values",
    "load_chat_jsonl_suite",
    "load_generic",
    "load_model_written_evals",
    "load_suite",
    "make_judge",
    "mean_metric",
    "paired_rates",
    "rate_metric",
    "read_jsonl",
    "score_outputs",
    "study_scorer",
]
