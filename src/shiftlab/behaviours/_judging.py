"""Asking a judge about outputs, and turning its answers into verdicts: what every
judge-based scoring rule shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shiftlab.behaviours._types import Example, Verdict
from shiftlab.errors import DataError, ShiftlabError
from shiftlab.judges import JudgeRequest, label_probability

if TYPE_CHECKING:
    from shiftlab.judges import Judge


def question_text(example: Example) -> str:
    """The prompt's text as a judge reads it: every non-system turn."""
    return "\n\n".join(m["content"] for m in example.messages if m["role"] != "system")


def fill_prompt(template: str, **fields: str) -> tuple[dict[str, str], ...]:
    """A one-turn judge prompt: ``template`` with each ``{field}`` replaced."""
    text = template
    for name, value in fields.items():
        text = text.replace("{" + name + "}", value)
    return ({"role": "user", "content": text},)


def ask_binary(
    judge: Judge,
    prompts: Sequence[tuple[dict[str, str], ...]],
    positive: str = "YES",
    negative: str = "NO",
) -> list[float | None]:
    """P(``positive``) for each two-label question (see :func:`label_probability`)."""
    labels = (positive, negative)
    replies = judge.complete([JudgeRequest(p, max_tokens=8, labels=labels) for p in prompts])
    return [label_probability(reply, positive, negative) for reply in replies]


def binary_verdict(p: float | None, group: str, labels: str) -> Verdict:
    """Misbehaving when the judge's P(positive label) is above one half; unparseable when
    it gave neither label."""
    if p is None:
        return Verdict("unparseable", f"judge answered neither {labels}", None, group)
    return Verdict.rated(p > 0.5, f"P={p:.3f}", p, group)


def require_judge(judge: Judge | None, behaviour: str) -> Judge:
    """``judge``, or a clear error when rules that need one got none."""
    if judge is None:
        raise ShiftlabError(f"{behaviour}: these outputs are judged by a model; pass judge=...")
    return judge


def need_field(example: Example, field: str, kind: type | tuple[type, ...], where: str) -> Any:
    """The row's ``field``, checked to be of ``kind``; errors name ``where`` and the field."""
    value = example.meta.get(field)
    if not isinstance(value, kind):
        expected = (
            kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        )
        raise DataError(f"{where}: field {field!r} must be {expected}, got {value!r}")
    return value
