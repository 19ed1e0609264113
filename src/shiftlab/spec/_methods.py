"""The catalogue of methods: what each consistency method, control and paired loss *is*,
whatever its knobs. Every floor reads these facts from here (the spec validates names
with them, consistency picks with them, the study plans arms with them, attribution
groups by them), so no other module keeps a list of method names.

>>> METHOD_FACTS["multi_view"].selection, METHOD_FACTS["bct"].role
('filter', 'paired_loss')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MethodRole = Literal["consistency_training", "control", "paired_loss"]


@dataclass(frozen=True)
class MethodFacts:
    """``role``: one of the study's consistency-training methods, a control (a baseline:
    no selection, or an external scorer), or a paired loss (BCT, ACT: no labels, no pool).
    ``selection``: how a label method's operator picks, the best-scoring candidate per
    prompt (``argmax``) or keep-or-drop a prompt (``filter``); None for paired losses.
    ``score_based``: it picks by a per-candidate score among ``n_candidates`` samples, so
    its candidate count is recorded as k and k-scaling applies. ``uses_scorer``: the score
    comes from an external scorer (a reward model, a judge, an endpoint).
    ``one_candidate``: one candidate per prompt, so nothing to select whatever the knobs.
    ``sampled``: its candidates are samples (at the method's temperature and top-p); the
    others decode greedily.
    """

    role: MethodRole
    selection: Literal["argmax", "filter"] | None
    score_based: bool = False
    uses_scorer: bool = False
    one_candidate: bool = False
    sampled: bool = False


METHOD_FACTS: dict[str, MethodFacts] = {
    "self_confidence": MethodFacts(
        "consistency_training", "argmax", score_based=True, sampled=True
    ),
    "diverse_decoding": MethodFacts(
        "consistency_training", "argmax", uses_scorer=True, sampled=True
    ),
    "multi_view": MethodFacts("consistency_training", "filter"),
    "self_refinement": MethodFacts("consistency_training", "argmax"),
    "self_rewarding": MethodFacts("consistency_training", "argmax", score_based=True, sampled=True),
    "greedy_self_training": MethodFacts("control", "argmax", one_candidate=True),
    "rejection_sampling": MethodFacts(
        "control", "argmax", score_based=True, uses_scorer=True, sampled=True
    ),
    "bct": MethodFacts("paired_loss", None),
    "act": MethodFacts("paired_loss", None),
}
PAIRED_METHODS = tuple(m for m, f in METHOD_FACTS.items() if f.role == "paired_loss")
CONTROL_METHODS = tuple(m for m, f in METHOD_FACTS.items() if f.role == "control")
LABEL_METHODS = tuple(m for m, f in METHOD_FACTS.items() if f.role != "paired_loss")
SCORE_BASED = tuple(m for m, f in METHOD_FACTS.items() if f.score_based)
# The method whose pool gives the ``relabeled`` arm its labels: one greedy sample a prompt.
RELABEL_SOURCE: Literal["greedy_self_training"] = "greedy_self_training"
