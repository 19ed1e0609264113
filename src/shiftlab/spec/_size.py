"""How much training a study asks for, and the ceiling above which it cannot finish.

A typo in a step count (``steps: 1000000000000``) passes every field check but would run
for longer than any machine lasts; :func:`check_size` refuses such a spec before anything
is built, unless the caller forces it.

>>> from shiftlab.spec import parse_spec
>>> spec = parse_spec({"base_models": [{"name": "toy", "path": "toyworld:small"}],
...                    "behaviours": [{"name": "sycophancy", "induction": {"steps": 10**12}}],
...                    "organisms": {"seeds": [0]}})
>>> check_size(spec, "spec.yaml")
Traceback (most recent call last):
...
shiftlab.errors.SpecError: spec.yaml: the study would train on about 3.2e+13 sequences ...
"""

from __future__ import annotations

from shiftlab.errors import SpecError
from shiftlab.spec._models import StudySpec

# Training sequences (optimiser steps x batch size, over every organism and run) above
# which a study is refused: at a brisk 1,000 sequences a second it is four months of
# training. The paper's study (108 organisms, seven methods, 7B-70B models) is ~10^8.
MAX_TRAINING_SEQUENCES = 10**10


def training_sequences(spec: StudySpec) -> dict[str, int]:
    """At most how many sequences the study trains on: ``organisms`` (induction) and
    ``runs`` (every trained arm of every method, k value and run seed)."""
    per_base = sum(b.induction.steps * b.induction.batch_size for b in spec.behaviours)
    organisms = len(spec.base_models) * len(spec.organisms.seeds)
    trained_arms = len([a for a in spec.arms if a != "none"])
    runs_per_organism = sum(trained_arms * (1 + len(m.k_values)) for m in spec.methods)
    training = spec.runs.training
    return {
        "organisms": organisms * per_base,
        "runs": organisms * len(spec.behaviours) * runs_per_organism * len(spec.runs.seeds)
        * training.steps * training.batch_size,
    }  # fmt: skip


def check_size(spec: StudySpec, source: str, *, force: bool = False) -> None:
    """Refuse (one line naming ``source``) a study above :data:`MAX_TRAINING_SEQUENCES`,
    unless ``force``."""
    parts = training_sequences(spec)
    total = sum(parts.values())
    if total <= MAX_TRAINING_SEQUENCES or force:
        return
    raise SpecError(
        f"{source}: the study would train on about {total:.2g} sequences (organisms "
        f"{parts['organisms']:.2g}, runs {parts['runs']:.2g}; steps x batch_size), above the "
        f"{MAX_TRAINING_SEQUENCES:.0e} that any study can finish; check the steps and sizes, "
        "or pass --force"
    )
