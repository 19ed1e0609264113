"""The in-memory types every suite has, toyworld or real data."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Message = Mapping[str, str]
VerdictLabel = Literal["misbehaving", "aligned", "unparseable"]


@dataclass(frozen=True)
class Example:
    """One prompt (chat messages up to the assistant turn) with an optional reference target."""

    id: str
    messages: tuple[Message, ...]
    target: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The last user message, for tables and reports."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")


@dataclass(frozen=True)
class PairExample:
    """A clean prompt and its wrapped (perturbed) twin with a shared target, for BCT/ACT."""

    id: str
    clean: tuple[Message, ...]
    wrapped: tuple[Message, ...]
    target: str | None = None


@dataclass(frozen=True)
class Verdict:
    """A scorer's verdict on one output: misbehaving, aligned, or unparseable."""

    label: VerdictLabel
    detail: str = ""

    @property
    def score(self) -> float | None:
        """1 for misbehaving, 0 for aligned, None when the output could not be judged."""
        return {"misbehaving": 1.0, "aligned": 0.0}.get(self.label)


Scorer = Callable[[Example, str], Verdict]


@dataclass(frozen=True)
class Suite:
    """A behaviour's four splits, its scorer and a fingerprint of its content.

    ``scorer`` is None for suites whose scoring rules are not available; evaluating such a
    suite raises.
    """

    behaviour: str
    source: str
    induction: Sequence[Example]
    consistency: Sequence[Example]
    pairs: Sequence[PairExample]
    eval: Sequence[Example]
    scorer: Scorer | None
    fingerprint: str
