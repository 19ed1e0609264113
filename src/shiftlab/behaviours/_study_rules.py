"""The consistency-misalignment study's four behaviours: one table of their scoring rules.

Rule-based where the rule is exact (grader choice, leaked password, the reward model's
bias word, the five short gameable tasks' counts, sentiment labels); judge-based where
the data needs one (agreement with a wrong claim, emergent-misalignment alignment and
coherence on 0-100, hard-coded tests, self-serving reward functions). The judge prompts
are shiftlab's own wording of the study's criteria. Each behaviour's rules live in their
own module; this table is the only place that dispatches on a behaviour's name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shiftlab.behaviours._emergent_misalignment import (
    EmergentMisalignmentScorer,
    check_emergent_misalignment_row,
)
from shiftlab.behaviours._reward_hacking import RewardHackingScorer, check_reward_hacking_row
from shiftlab.behaviours._scoring import BehaviourScorer
from shiftlab.behaviours._spurious_correlation import (
    SpuriousCorrelationScorer,
    check_spurious_correlation_row,
)
from shiftlab.behaviours._sycophancy import SycophancyScorer, check_sycophancy_row
from shiftlab.behaviours._types import Example
from shiftlab.errors import DataError


@dataclass(frozen=True)
class StudyRules:
    """A behaviour's row check (run at load time) and how its scorer is made from the
    checked eval rows and their file."""

    check_row: Callable[[Example, str], None]
    scorer: Callable[[Sequence[Example], str], BehaviourScorer]


STUDY_RULES: dict[str, StudyRules] = {
    "sycophancy": StudyRules(check_sycophancy_row, lambda examples, where: SycophancyScorer()),
    "reward_hacking": StudyRules(
        check_reward_hacking_row, lambda examples, where: RewardHackingScorer()
    ),
    "emergent_misalignment": StudyRules(
        check_emergent_misalignment_row, lambda examples, where: EmergentMisalignmentScorer()
    ),
    "spurious_correlation": StudyRules(
        check_spurious_correlation_row, SpuriousCorrelationScorer.from_examples
    ),
}


def study_scorer(behaviour: str, examples: Sequence[Example], where: str) -> BehaviourScorer:
    """The scorer of one of the study's behaviours, for these eval rows, each checked for
    the fields its rules read (errors name ``file:line`` and the field).

    >>> study_scorer("sycophancy", [], "eval.jsonl").behaviour
    'sycophancy'
    """
    rules = STUDY_RULES.get(behaviour)
    if rules is None:
        raise DataError(f"{where}: no scoring rules for behaviour {behaviour!r}")
    for example in examples:
        rules.check_row(example, f"{where}:{example.id.rsplit('-', 1)[1]}")
    return rules.scorer(examples, where)
