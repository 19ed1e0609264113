"""A judge's raw replies kept on disk, so rescoring makes no calls."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shiftlab._sqlite_cache import SharedCache
from shiftlab.judges._types import Judge, JudgeReply, JudgeRequest


@dataclass
class CachedJudge:
    """A judge whose raw replies are kept on disk keyed by (judge, request): SQLite
    files beside ``path``, one per host and read by all (:mod:`shiftlab._sqlite_cache`).

    Only requests not in the cache reach the judge, ``chunk_size`` at a time, and each
    chunk's replies are written as soon as it returns, so a failure loses at most one
    chunk. ``n_misses`` counts requests sent to the judge, ``n_hits`` the others. Safe to
    share between threads, processes and hosts.
    """

    judge: Judge
    path: Path
    chunk_size: int = 64
    n_hits: int = 0
    n_misses: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self._replies = SharedCache(self.path, "replies", ("judge", "request", "reply"))

    @property
    def name(self) -> str:
        return self.judge.name

    def complete(self, requests: Sequence[JudgeRequest]) -> list[JudgeReply]:
        # A judge may name itself otherwise in caches (LocalJudge: with its arithmetic's
        # version), so replies computed another way are never read back as its own.
        keys = [r.key(getattr(self.judge, "cache_name", self.name)) for r in requests]
        found = {k: JudgeReply.from_json(row[2]) for k, row in self._replies.get(keys).items()}
        unique = dict(zip(keys, requests, strict=True))
        missing = [(k, r) for k, r in unique.items() if k not in found]
        with self._lock:  # a repeat within one call is asked once and counts as a hit
            self.n_hits += len(keys) - len(missing)
            self.n_misses += len(missing)
        for start in range(0, len(missing), self.chunk_size):
            chunk = missing[start : start + self.chunk_size]
            replies = self.judge.complete([request for _, request in chunk])
            self._replies.put(
                {
                    key: (self.name, json.dumps(asdict(request)), reply.to_json())
                    for (key, request), reply in zip(chunk, replies, strict=True)
                }
            )
            found.update((key, reply) for (key, _), reply in zip(chunk, replies, strict=True))
        return [found[k] for k in keys]
