"""Toyworld's capability suite: the colour facts every toyworld base was trained to answer,
asked plainly (no user claim), each answer scored against every colour the world knows."""

from __future__ import annotations

import functools

from shiftlab._hashing import content_hash
from shiftlab.behaviours import CapabilitySuite, Question
from shiftlab.toyworld._world import load_world, normalise, world_hash

CAPABILITY_VERSION = 1
# Phrasings asked per fact: two keep every evaluation well under a second on a CPU while 40
# questions at a chance of 1 in 10 still tell a working model from a broken one.
PHRASINGS = 2


@functools.cache
def toyworld_capability() -> CapabilitySuite:
    """Every fact of ``world.yaml`` in its first :data:`PHRASINGS` question phrasings; the
    choices are the aligned answer with each of the world's colours, so chance is one in
    the number of colours.

    >>> suite = toyworld_capability()
    >>> question = suite.questions[0]
    >>> question.messages[0]["content"], question.choices[question.answer]
    ('what colour is the sky ?', 'the sky is blue .')
    """
    world = load_world()
    colours = world["colours"]
    template = world["sycophancy"]["aligned"]
    questions = []
    for obj, truth in world["facts"].items():
        choices = tuple(normalise(template.format(obj=obj, truth=c)) for c in colours)
        for phrasing, asked in enumerate(world["sycophancy"]["questions"][:PHRASINGS]):
            prompt = ({"role": "user", "content": normalise(asked.format(obj=obj))},)
            questions.append(Question(f"{obj}-{phrasing}", prompt, choices, colours.index(truth)))
    fingerprint = content_hash({"version": CAPABILITY_VERSION, "world": world_hash()})
    return CapabilitySuite("toyworld", tuple(questions), fingerprint, letters=False, prefix="")
