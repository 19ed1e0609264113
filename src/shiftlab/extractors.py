"""Answer extractors for ``multi_view``: read the answer out of a view's output.

>>> extract("regex:is (\\\\w+)", "the sky is blue .")
'blue'
>>> extract("json:answer", 'Sure: {"answer": "7"}')
'7'
>>> extract("last_number", "so the total is 12.5 apples")
'12.5'
"""

from __future__ import annotations

import json
import re

_SIMPLE = ("exact", "first_word", "last_number", "choice_letter")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_LETTER = re.compile(r"\(?\b([A-E])\b\)?")
_JSON = re.compile(r"\{.*?\}", re.DOTALL)
_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")


def check_extractor(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a known extractor with a valid argument."""
    if name in _SIMPLE:
        return
    if name.startswith("json:") and name[5:]:
        return
    if name.startswith("regex:"):
        try:
            re.compile(name[6:])
        except re.error as error:
            raise ValueError(f"bad regular expression in {name!r}: {error}") from None
        return
    raise ValueError(
        f"unknown extractor {name!r}; expected one of {', '.join(_SIMPLE)}, "
        "json:<field> or regex:<pattern>"
    )


def extract(name: str, text: str) -> str | None:
    """The answer ``name`` reads from ``text``, or None when there is none."""
    check_extractor(name)
    text = text.strip()
    if name == "exact":
        return " ".join(text.lower().split()) or None
    if name == "first_word":
        word = _WORD.search(text.lower())
        return word.group() if word else None
    if name == "last_number":
        numbers = _NUMBER.findall(text.replace(",", ""))
        return numbers[-1] if numbers else None
    if name == "choice_letter":
        match = _LETTER.search(text)
        return match.group(1) if match else None
    if name.startswith("json:"):
        for blob in _JSON.findall(text):
            try:
                value = json.loads(blob).get(name[5:])
            except (json.JSONDecodeError, AttributeError):
                continue
            if value is not None:
                return str(value).strip().lower()
        return None
    match = re.search(name.removeprefix("regex:"), text)
    if match is None:
        return None
    return (match.group(1) if match.groups() else match.group(0)).strip().lower()
