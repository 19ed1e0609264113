"""Reading JSONL data files with errors that name the file, line and field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shiftlab.errors import DataError


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for each non-blank line of a JSONL file (a UTF-8
    byte-order mark at its start, as some editors write, is skipped).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.jsonl"
    >>> _ = p.write_text('{"a": 1}\\n{"a": \\n')
    >>> list(read_jsonl(p))
    Traceback (most recent call last):
    ...
    shiftlab.errors.DataError: ...x.jsonl:2: malformed JSON: ...
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise DataError(f"{path}:{number}: not UTF-8 text ({error.reason})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(
                    f"{path}:{number}: malformed JSON: {error.msg} (column {error.colno})"
                ) from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}:{number}: expected a JSON object, got {type(record).__name__}"
                )
            yield number, record


def chat_messages(record: dict[str, Any], where: str) -> list[dict[str, str]]:
    """Validate a record's ``messages`` field (a list of ``{role, content}``)."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list of chat messages")
    out = []
    roles = ("system", "user", "assistant")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise DataError(f"{where}: messages[{i}] must be an object with a string 'content'")
        # Some released files omit roles; they alternate user/assistant.
        role = message.get("role", "user" if i % 2 == 0 else "assistant")
        if role not in roles:
            raise DataError(f"{where}: messages[{i}].role must be one of {roles}, got {role!r}")
        out.append({"role": role, "content": message["content"]})
    return out
