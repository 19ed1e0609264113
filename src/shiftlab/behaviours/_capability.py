"""Capability: multiple-choice questions every evaluation scores beside the behaviour, so a
method that lowers a misbehaviour by breaking the model shows as a capability loss.

Real models answer MMLU / GPQA-format questions, read as the study read them: the answer
letters' next-token log-probabilities at the answer position, the highest taken as the
model's choice. A generated world (toyworld) registers its own questions, scored by the
log-probability of each whole answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from shiftlab._hashing import content_hash
from shiftlab._registry import Registry
from shiftlab._stats import wilson_interval
from shiftlab.behaviours._formats import local_path, read_table
from shiftlab.chat import Message
from shiftlab.errors import DataError
from shiftlab.generation import choice_logprobs, label_logprobs
from shiftlab.spec import CapabilitySpec

LETTERS = "ABCDEFGHIJ"
SAMPLE = Path(__file__).with_name("capability_sample.jsonl")
QUESTION_SUFFIX = "Answer with the letter of the correct choice."


@dataclass(frozen=True)
class Question:
    """One multiple-choice question: the prompt, what is scored for each choice (an answer
    letter, or the whole answer), and the index of the right one."""

    id: str
    messages: tuple[Message, ...]
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class CapabilitySuite:
    """Questions and how they are read: ``letters`` scores each choice's first token after
    the assistant turn starts with ``prefix`` (MMLU's answer letters); otherwise each
    choice's whole log-probability after ``prefix``."""

    source: str
    questions: Sequence[Question]
    fingerprint: str
    letters: bool = True
    prefix: str = "Answer:"

    @property
    def chance(self) -> float:
        """The accuracy of answering each question uniformly at random."""
        return sum(1 / len(q.choices) for q in self.questions) / len(self.questions)


@dataclass(frozen=True)
class CapabilityScore:
    """Accuracy on a capability suite with its Wilson 95% interval (inside [0, 1])."""

    accuracy: float
    ci_low: float
    ci_high: float
    n: int
    n_correct: int
    chance: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Suites a package generates (``eval.capability.source: <name>``); toyworld registers itself.
CAPABILITY_SOURCES: Registry[Callable[[], CapabilitySuite]] = Registry(
    "capability source", builtin={"toyworld": "shiftlab.toyworld"}
)


def _letters_prompt(question: str, choices: Sequence[str]) -> tuple[Message, ...]:
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return ({"role": "user", "content": f"{question}\n\n{options}\n\n{QUESTION_SUFFIX}"},)


def _gpqa_choices(record: dict[str, Any], where: str) -> tuple[list[str], int]:
    """GPQA's right and wrong answers, the right one at a place fixed by the question (so
    it is not always A, and every run sees the same order)."""
    wrong = [record.get(f"Incorrect Answer {i}") for i in (1, 2, 3)]
    right = record.get("Correct Answer")
    if not all(isinstance(a, str) and a.strip() for a in (right, *wrong)):
        raise DataError(f"{where}: GPQA rows need 'Correct Answer' and 'Incorrect Answer 1-3'")
    place = int(hashlib.sha256(str(record["Question"]).encode()).hexdigest(), 16) % 4
    choices = [str(a).strip() for a in wrong]
    choices.insert(place, str(right).strip())
    return choices, place


def mmlu_question(record: dict[str, Any], where: str, number: int) -> Question:
    """One row in the MMLU format (``question``, ``choices`` and ``answer`` as an index or
    a letter; or ``question``, columns ``A``..``D`` and an ``answer`` letter) or GPQA's
    (``Question``, ``Correct Answer``, ``Incorrect Answer 1-3``).

    >>> mmlu_question({"question": "2 + 2?", "A": "3", "B": "4", "answer": "B"}, "x", 1).answer
    1
    >>> mmlu_question({"question": "2 + 2?", "choices": ["4", "5"], "answer": 3}, "f.jsonl:7", 7)
    Traceback (most recent call last):
    ...
    shiftlab.errors.DataError: f.jsonl:7: field 'answer' must be a choice's index or letter (got 3)
    """
    if "Question" in record and "Correct Answer" in record:
        choices, answer = _gpqa_choices(record, where)
        question = str(record["Question"])
    else:
        asked = record.get("question")
        if not isinstance(asked, str) or not asked.strip():
            raise DataError(f"{where}: field 'question' must be a non-empty string")
        question = asked
        raw = record.get("choices")
        if raw is None:
            raw = [record[x] for x in LETTERS if record.get(x) not in (None, "")]
        if not isinstance(raw, list) or not 2 <= len(raw) <= len(LETTERS):
            raise DataError(
                f"{where}: field 'choices' (or columns A, B, ...) must hold 2 to "
                f"{len(LETTERS)} answers"
            )
        choices = [str(c) for c in raw]
        given = record.get("answer")
        text = str(given).strip()
        answer = int(text) if text.isdigit() else LETTERS.find(text.upper()) if text else -1
        if not 0 <= answer < len(choices) or isinstance(given, bool):
            raise DataError(
                f"{where}: field 'answer' must be a choice's index or letter (got {given!r})"
            )
    identifier = str(record.get("id", number))
    return Question(identifier, _letters_prompt(question, choices),
                    tuple(LETTERS[: len(choices)]), answer)  # fmt: skip


def load_capability_suite(spec: CapabilitySpec, base_path: str) -> CapabilitySuite:
    """The capability suite ``spec`` names for the base model at ``base_path``
    (``auto``: ``toyworld`` for ``toyworld:`` bases, the shipped ``sample`` otherwise).

    >>> suite = load_capability_suite(CapabilitySpec(), "HuggingFaceTB/SmolLM2-135M-Instruct")
    >>> suite.source, len(suite.questions), suite.questions[0].choices
    ('sample', 20, ('A', 'B', 'C', 'D'))
    """
    source = spec.source
    if source == "auto":
        source = "toyworld" if base_path.startswith("toyworld:") else "sample"
    provider = CAPABILITY_SOURCES.get(source)
    if provider is not None:
        suite = provider()
    else:
        table = str(SAMPLE) if source == "sample" else source
        if not table.startswith("hf:"):
            table = str(local_path(table))
            if not Path(table).exists():
                raise DataError(f"eval.capability.source: no such file or folder {table!r}")
        rows = read_table(table, spec.subset)
        questions = [mmlu_question(r, f"{table}:{n}", n) for n, r in rows]
        if not questions:
            raise DataError(f"{table}: no capability questions")
        fingerprint = content_hash({"format": "mmlu", "rows": content_hash([r for _, r in rows])})
        suite = CapabilitySuite(source, questions, fingerprint)
    if spec.n_questions is not None:
        suite = CapabilitySuite(
            suite.source, suite.questions[: spec.n_questions],
            content_hash([suite.fingerprint, spec.n_questions]), suite.letters, suite.prefix,
        )  # fmt: skip
    return suite


def evaluate_capability(
    model: Any, tokenizer: Any, suite: CapabilitySuite, *, batch_size: int = 32
) -> tuple[pl.DataFrame, CapabilityScore]:
    """Answer every question of ``suite`` by the highest-scored choice.

    Returns one row per question (``question_id, answer, predicted, correct``) and the
    accuracy with its interval.

    >>> from shiftlab.models import load_causal_lm
    >>> model, tok = load_causal_lm("toyworld:small")
    >>> rows, score = evaluate_capability(model, tok, CAPABILITY_SOURCES.get("toyworld")())
    >>> rows.height == score.n, score.accuracy > score.chance
    (True, True)
    """
    questions = list(suite.questions)
    prompts = [q.messages for q in questions]
    if suite.letters:
        widest = max(len(q.choices) for q in questions)
        scores = label_logprobs(model, tokenizer, prompts, prefix=suite.prefix,
                                labels=LETTERS[:widest], batch_size=batch_size)  # fmt: skip
        chosen = [
            max(range(len(q.choices)), key=row.__getitem__)
            for q, row in zip(questions, scores, strict=True)
        ]
    else:
        by_choice = choice_logprobs(model, tokenizer, prompts, [q.choices for q in questions],
                                    prefix=suite.prefix, batch_size=batch_size)  # fmt: skip
        chosen = [
            q.choices.index(max(q.choices, key=s.__getitem__))
            for q, s in zip(questions, by_choice, strict=True)
        ]
    rows = pl.DataFrame(
        {
            "question_id": [q.id for q in questions],
            "answer": [q.answer for q in questions],
            "predicted": chosen,
        },
        schema={"question_id": pl.String, "answer": pl.Int64, "predicted": pl.Int64},
    ).with_columns(correct=pl.col("answer") == pl.col("predicted"))
    n_correct = int(rows["correct"].sum())
    low, high = wilson_interval(n_correct, rows.height)
    score = CapabilityScore(n_correct / rows.height, low, high, rows.height, n_correct,
                            suite.chance)  # fmt: skip
    return rows, score
