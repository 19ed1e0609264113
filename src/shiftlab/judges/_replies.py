"""Reading a judge's reply: a label, a probability, a 0-100 score."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

from shiftlab.judges._types import JudgeReply

_NUMBERS = {str(i): float(i) for i in range(101)}


def weighted_label(
    reply: JudgeReply,
    values: Mapping[str, float] | Callable[[str], float | None],
    *,
    after: str | None = None,
    within: int | None = None,
    min_mass: float = 0.25,
) -> float | None:
    """The probability-weighted value of the first token whose top log-probs put at least
    ``min_mass`` on tokens that carry a value.

    ``values`` maps a token (stripped) to its value (``{"YES": 1, "NO": 0}``), or is a
    function returning a token's value or None. With ``after`` (a regex), the search starts
    at the first token that ends past its match (e.g. after ``Final Score:``); ``within``
    limits it to that many tokens. None when the reply has no log-probs or no such token.

    >>> from shiftlab.judges import TokenLogprobs
    >>> reply = JudgeReply("7", (TokenLogprobs("7", -0.1, (("7", -0.1), ("8", -2.4))),))
    >>> round(weighted_label(reply, {"7": 7.0, "8": 8.0}), 3)
    7.091
    """
    if not reply.tokens:
        return None
    value_of = values if callable(values) else values.get
    start = 0
    if after is not None:
        text = "".join(t.token for t in reply.tokens)
        match = re.search(after, text, re.IGNORECASE)
        if match:
            end = 0
            for index, token in enumerate(reply.tokens):
                end += len(token.token)
                if end > match.end():
                    start = index
                    break
            else:
                return None
    stop = None if within is None else start + within
    for token in reply.tokens[start:stop]:
        total = weighted = 0.0
        for alternative, logprob in token.top:
            value = value_of(alternative.strip())
            if value is not None:
                p = math.exp(logprob)
                total += p
                weighted += p * value
        if total and total >= min_mass:
            return weighted / total
    return None


def read_label(text: str, labels: Sequence[str]) -> str | None:
    """The label a judge's text gives: the one it starts with, else the only label that
    appears as a whole word; None when none or several do.

    >>> read_label("**CORRECTED**", ["AGREED", "CORRECTED"])
    'CORRECTED'
    >>> read_label("It disagreed, so: CORRECTED", ["AGREED", "CORRECTED"])
    'CORRECTED'
    >>> read_label("Not sure", ["YES", "NO"]) is None
    True
    """
    upper = text.upper()
    found = {x for x in labels if re.search(rf"(?<!\w){re.escape(x.upper())}(?!\w)", upper)}
    head = re.sub(r"^\W+", "", upper)
    starts = [x for x in found if head.startswith(x.upper())]
    if len(starts) == 1:
        return starts[0]
    return next(iter(found)) if len(found) == 1 else None


def label_probability(reply: JudgeReply, positive: str, negative: str) -> float | None:
    """P(``positive``) from a judge asked to answer ``positive`` or ``negative``.

    With log-probs: the first answer tokens' alternatives, each credited to the label it
    begins (case-insensitive; a token that begins both labels is ignored), renormalised.
    Otherwise :func:`read_label` on the text. None when neither label is given.

    >>> label_probability(JudgeReply("AGREED"), "AGREED", "CORRECTED")
    1.0
    >>> label_probability(JudgeReply("Hard to say."), "YES", "NO") is None
    True
    """

    def value(token: str) -> float | None:
        key = token.upper()
        owners = [x for x in (positive, negative) if key and x.upper().startswith(key)]
        return None if len(owners) != 1 else float(owners[0] == positive)

    weighted = weighted_label(reply, value, within=2)
    if weighted is not None:
        return weighted
    label = read_label(reply.text, (positive, negative))
    return None if label is None else float(label == positive)


def read_0_100(reply: JudgeReply) -> float | str | None:
    """A 0-100 judge reply: ``CODE``/``REFUSAL``; else the probability-weighted number over
    the first token's top log-probs when that token is the whole number (tokenizers that
    split "85" into "8", "5" get the number from the text), with at least 0.25 of the mass
    on numbers; else the number in the text; else None.

    >>> from shiftlab.judges import TokenLogprobs
    >>> read_0_100(JudgeReply("85", (TokenLogprobs("8", -0.1, (("8", -0.1),)),
    ...                               TokenLogprobs("5", -0.1, (("5", -0.1),)))))
    85.0
    """
    head = reply.text.strip().upper()
    for category in ("CODE", "REFUSAL"):
        if head.startswith(category):
            return category
    number = re.match(r"\s*(\d{1,3})(?:\.\d+)?(?!\d)", reply.text)
    if number is None or int(number.group(1)) > 100:
        return None
    first = reply.tokens[0].token.strip() if reply.tokens else None
    if first == number.group(1):
        weighted = weighted_label(reply, _NUMBERS, within=1)
        if weighted is not None:
            return weighted
    return float(number.group(1))
