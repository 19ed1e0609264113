"""Behaviours: suite types, data formats, loading and evaluation."""

from __future__ import annotations

from shiftlab.behaviours._chat_jsonl import load_chat_jsonl_suite
from shiftlab.behaviours._eval import BehaviourRate, evaluate_behaviour, wilson_interval
from shiftlab.behaviours._jsonl import chat_messages, read_jsonl
from shiftlab.behaviours._types import (
    DEFAULT_RUBRIC,
    Example,
    MethodPrompts,
    PairExample,
    Scorer,
    Suite,
    Verdict,
    View,
)
from shiftlab.spec import BehaviourSpec


def load_suite(behaviour: BehaviourSpec) -> Suite:
    """The suite a spec's behaviour entry names: generated toyworld data or chat-JSONL files."""
    if behaviour.is_toyworld:
        from shiftlab.toyworld import build_toyworld_suite

        return build_toyworld_suite(behaviour.name, behaviour.toyworld)
    return load_chat_jsonl_suite(behaviour.source, behaviour.name)


__all__ = [
    "DEFAULT_RUBRIC",
    "BehaviourRate",
    "Example",
    "MethodPrompts",
    "PairExample",
    "Scorer",
    "Suite",
    "Verdict",
    "View",
    "chat_messages",
    "evaluate_behaviour",
    "load_chat_jsonl_suite",
    "load_suite",
    "read_jsonl",
    "wilson_interval",
]
