"""Content hashes: every artefact id is a hash of everything it depends on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal values hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_hash(value: Any, length: int = 16) -> str:
    """Hex SHA-256 of ``value``'s canonical JSON, cut to ``length`` characters.

    >>> content_hash({"b": 1, "a": 2}) == content_hash({"a": 2, "b": 1})
    True
    """
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def file_hash(path: Path, length: int = 16) -> str:
    """Hex SHA-256 of a file's bytes, cut to ``length`` characters."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def tree_hash(root: Path, length: int = 16) -> str:
    """Hash of every file below ``root`` (relative names and bytes), in sorted order."""
    entries = [
        (str(path.relative_to(root)), file_hash(path, 64))
        for path in sorted(root.rglob("*"))
        if path.is_file()
    ]
    return content_hash(entries, length)
