"""What a study builds, as jobs: organisms (and base evaluations), pools, runs and their
design-table cells, shift measurements; each names its artefact by a content hash of
everything it depends on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shiftlab._hashing import content_hash
from shiftlab.behaviours import (
    PairExample,
)
from shiftlab.chat import Message
from shiftlab.shift import Decoding
from shiftlab.spec import (
    BaseModelSpec,
    BehaviourSpec,
    MethodSpec,
)
from shiftlab.training import Objective

# Training checkpoints of unfinished organisms and runs (``checkpoint_every``).
CHECKPOINTS = ".checkpoints"


@dataclass(frozen=True)
class OrganismJob:
    """One artefact to build: a base-model evaluation (seed None) or an organism."""

    kind: str
    artefact_id: str
    base: BaseModelSpec
    behaviour: BehaviourSpec
    seed: int | None
    config: dict[str, Any]


def short_hash(value: Any) -> str:
    return content_hash(value, 10)


@dataclass(frozen=True)
class PoolJob:
    """One pool to build: an organism's candidates under one label method."""

    artefact_id: str
    organism: OrganismJob
    method: MethodSpec
    config: dict[str, Any]


@dataclass(frozen=True)
class RunJob:
    """One phase-3 training run: an organism trained on one arm's data with one seed.

    ``config`` is everything the run is a function of (its id is a hash of it), except
    the training data itself, which it holds by hash.
    """

    run_id: str
    organism: OrganismJob
    objective: Objective
    seed: int
    config: dict[str, Any]
    examples: tuple[tuple[tuple[Message, ...], str], ...] = ()
    pairs: tuple[PairExample, ...] = ()

    @property
    def n_train(self) -> int:
        return len(self.examples) or len(self.pairs)


@dataclass(frozen=True)
class RunRow:
    """One row of the design table: which run (if any) a (method, arm, k, seed) cell uses."""

    organism: OrganismJob
    method: str
    arm: str
    k: int | None
    seed: int
    run: RunJob | None


@dataclass(frozen=True)
class RunPlan:
    """The design table's cells and the distinct runs (by id) behind them."""

    rows: list[RunRow]
    jobs: dict[str, RunJob]


# (decoding key, prompt key) -> the organism's own samples: (text, sequence NLL, tokens)
OwnSamples = dict[tuple[str, str], list[tuple[str, float, int]]]


@dataclass(frozen=True)
class ShiftJob:
    """The shift of one run from its organism: its training targets against the organism's
    own samples on the same prompts (drawn the way the targets were, ``decoding``, for the
    NLL gap; from its own distribution for the representation measures), and its eval
    outputs against the organism's."""

    artefact_id: str
    run: RunJob
    samples_id: str
    decoding: Decoding
    config: dict[str, Any]
