"""What a judge is asked and what it answers: requests, raw replies, the protocol."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from shiftlab._hashing import content_hash
from shiftlab.chat import Message


@dataclass(frozen=True)
class JudgeRequest:
    """One chat request: the messages and the decoding settings (greedy by default).

    ``labels``: the answers the prompt asks for (``("YES", "NO")``). A local judge then
    scores each label as the reply instead of generating freely, so a small model still
    gives a readable answer; an HTTP judge generates as usual.
    """

    messages: tuple[Message, ...]
    max_tokens: int = 16
    temperature: float = 0.0
    top_logprobs: int = 20
    labels: tuple[str, ...] = ()

    def key(self, judge: str) -> str:
        """The cache key: the judge's name, the messages and every decoding setting."""
        return content_hash({"judge": judge, **asdict(self)})


@dataclass(frozen=True)
class TokenLogprobs:
    """A generated token, its log-prob and the top alternatives at its position."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class JudgeReply:
    """A judge's raw reply: the text and, when offered, per-token log-probs."""

    text: str
    tokens: tuple[TokenLogprobs, ...] | None = None

    def to_json(self) -> str:
        tokens = None if self.tokens is None else [[t.token, t.logprob, t.top] for t in self.tokens]
        return json.dumps({"text": self.text, "tokens": tokens})

    @classmethod
    def from_json(cls, raw: str) -> JudgeReply:
        data = json.loads(raw)
        tokens = data["tokens"]
        return cls(
            data["text"],
            None
            if tokens is None
            else tuple(
                TokenLogprobs(tok, lp, tuple((a, b) for a, b in top)) for tok, lp, top in tokens
            ),
        )


class Judge(Protocol):
    """Completes chat requests; ``name`` identifies the judge model in caches and tables
    (a judge with a ``cache_name`` attribute is keyed by that in caches instead)."""

    @property
    def name(self) -> str: ...

    def complete(self, requests: Sequence[JudgeRequest]) -> list[JudgeReply]:
        """One reply per request, in order."""
        ...


def http_judge_name(base_url: str, model: str) -> str:
    """How an HTTP judge is named in caches and tables."""
    return f"http:{base_url.rstrip('/')}#{model}"


def local_judge_name(model: str) -> str:
    """How a local judge is named in caches and tables."""
    return f"local:{model}"
