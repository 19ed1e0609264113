"""A judge's raw replies kept on disk, so rescoring makes no calls."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shiftlab.judges._types import Judge, JudgeReply, JudgeRequest


@dataclass
class CachedJudge:
    """A judge whose raw replies are kept in an SQLite file keyed by (judge, request).

    Only requests not in the cache reach the judge, ``chunk_size`` at a time, and each
    chunk's replies are written as soon as it returns, so a failure loses at most one
    chunk. ``n_misses`` counts requests sent to the judge, ``n_hits`` the others. Safe to
    share between threads and processes (SQLite locking).
    """

    judge: Judge
    path: Path
    chunk_size: int = 64
    n_hits: int = 0
    n_misses: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS replies "
                "(key TEXT PRIMARY KEY, judge TEXT, request TEXT, reply TEXT)"
            )

    @property
    def name(self) -> str:
        return self.judge.name

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with self._lock, contextlib.closing(sqlite3.connect(self.path, timeout=60)) as db, db:
            yield db

    def complete(self, requests: Sequence[JudgeRequest]) -> list[JudgeReply]:
        keys = [r.key(self.name) for r in requests]
        found: dict[str, JudgeReply] = {}
        with self._connect() as db:
            for i in range(0, len(keys), 500):
                part = keys[i : i + 500]
                marks = ",".join("?" * len(part))
                query = f"SELECT key, reply FROM replies WHERE key IN ({marks})"
                for key, raw in db.execute(query, part):
                    found[key] = JudgeReply.from_json(raw)
        unique = dict(zip(keys, requests, strict=True))
        missing = [(k, r) for k, r in unique.items() if k not in found]
        with self._lock:  # a repeat within one call is asked once and counts as a hit
            self.n_hits += len(keys) - len(missing)
            self.n_misses += len(missing)
        for start in range(0, len(missing), self.chunk_size):
            chunk = missing[start : start + self.chunk_size]
            replies = self.judge.complete([request for _, request in chunk])
            rows = [
                (key, self.name, json.dumps(asdict(request)), reply.to_json())
                for (key, request), reply in zip(chunk, replies, strict=True)
            ]
            with self._connect() as db:
                db.executemany("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?)", rows)
            found.update((key, reply) for (key, _), reply in zip(chunk, replies, strict=True))
        return [found[k] for k in keys]
