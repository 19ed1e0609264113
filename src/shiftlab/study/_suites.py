"""Every behaviour's suite, checked to be runnable before any model loads, with its judge."""

from __future__ import annotations

from dataclasses import replace

from shiftlab._hashing import content_hash
from shiftlab.behaviours import (
    SUITE_SOURCES,
    Suite,
    load_suite,
    make_judge,
)
from shiftlab.errors import DataError, ShiftlabError, SpecError
from shiftlab.judges import Judge
from shiftlab.spec import (
    StudySpec,
)
from shiftlab.store import Store

JUDGE_CACHE = "cache/judge.sqlite"


def load_suites(spec: StudySpec, store: Store | None = None) -> dict[str, Suite]:
    """Every behaviour's suite, checked to be runnable before any model is loaded.

    A behaviour with a ``judge`` gets it (built on first use), its replies cached in the
    store's ``cache/judge.sqlite``; one whose rules need a judge and has none is refused.
    """
    suites: dict[str, Suite] = {}
    judges: dict[str, Judge] = {}
    for i, behaviour in enumerate(spec.behaviours):
        where = f"behaviours[{i}] ({behaviour.name} from {behaviour.source})"
        try:
            suite = load_suite(behaviour)
        except DataError as error:
            if behaviour.source not in SUITE_SOURCES.names():
                raise
            # A generated suite's errors are about its knobs: name the spec field.
            raise SpecError(f"behaviours[{i}].{error}") from None
        if not any(e.target is not None for e in suite.induction):
            raise ShiftlabError(
                f"{where}: no induction rows with targets, so no organism can be induced "
                "(an eval-only suite can be scored with shiftlab.behaviours.evaluate_behaviour)"
            )
        if behaviour.judge is not None:
            key = content_hash(behaviour.judge.model_dump())
            if key not in judges:  # behaviours that name the same judge share it (and its model)
                cache = store.root / JUDGE_CACHE if store is not None else None
                judges[key] = make_judge(behaviour.judge, cache)
            suite = replace(suite, judge=judges[key])
        elif suite.scorer is not None and suite.scorer.needs_judge(suite.eval):
            raise ShiftlabError(
                f"{where}: its scoring rules ask a judge; set behaviours[{i}].judge "
                "(kind: http with base_url and model, or kind: local with path)"
            )
        suites[behaviour.name] = suite
    return suites
