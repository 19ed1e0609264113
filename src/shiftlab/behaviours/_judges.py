"""Judges: language models that grade outputs, behind one interface, cached on disk.

A :class:`Judge` completes chat requests and returns the raw reply: its text and, when
the backend offers them, the top log-probs of each generated token. Two real backends:
:class:`HTTPJudge` (any OpenAI-compatible chat-completions endpoint) and
:class:`LocalJudge` (a ``transformers`` causal LM). :class:`CachedJudge` keeps every raw
reply in an SQLite file keyed by (judge, request), so rescoring makes no calls.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shiftlab._hashing import content_hash
from shiftlab.behaviours._types import Message
from shiftlab.errors import ShiftlabError
from shiftlab.spec import JudgeSpec


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
    """Completes chat requests; ``name`` identifies the judge model in caches and tables."""

    @property
    def name(self) -> str: ...

    def complete(self, requests: Sequence[JudgeRequest]) -> list[JudgeReply]:
        """One reply per request, in order."""
        ...


# -- reading a reply -----------------------------------------------------------------------


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


def http_judge_name(base_url: str, model: str) -> str:
    """How an HTTP judge is named in caches and tables."""
    return f"http:{base_url.rstrip('/')}#{model}"


def local_judge_name(model: str) -> str:
    """How a local judge is named in caches and tables."""
    return f"local:{model}"


# -- the HTTP backend ----------------------------------------------------------------------


class HTTPJudge:
    """An OpenAI-compatible chat-completions endpoint.

    Asks for log-probs (and keeps going without them if the server refuses the option),
    runs ``max_concurrency`` requests at a time, retries connection errors, timeouts,
    malformed bodies, 429 and 5xx answers with exponential backoff, and raises a
    :class:`ShiftlabError` naming the endpoint when retries run out. The key comes from the
    environment variable ``api_key_env`` (may be unset for local servers).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 60.0,
    ):
        self.name = http_judge_name(base_url, model)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.key = os.environ.get(api_key_env)
        self.max_concurrency, self.retries = max_concurrency, retries
        self.backoff, self.timeout = backoff, timeout
        self.logprobs = True

    def _post(self, body: dict[str, Any]) -> JudgeReply:
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = json.dumps(body).encode()
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            request = urllib.request.Request(self.url, data=data, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                try:
                    return _parse_completion(raw)
                except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                    if last:
                        raise ShiftlabError(
                            f"judge {self.url} sent a malformed body: {raw[:200]!r}"
                        ) from None
            except urllib.error.HTTPError as error:
                detail = error.read()[:300].decode("utf-8", "replace")
                if error.code == 400 and body.get("logprobs") and "logprob" in detail.lower():
                    raise _NoLogprobs from None
                if not (error.code == 429 or error.code >= 500) or last:
                    raise ShiftlabError(
                        f"judge {self.url} answered HTTP {error.code}: {error.reason} {detail}"
                    ) from None
            except (
                urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException,
            ) as error:  # fmt: skip
                if last:
                    raise ShiftlabError(
                        f"judge {self.url} unreachable after {self.retries + 1} tries: {error}"
                    ) from None
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _complete_one(self, request: JudgeRequest) -> JudgeReply:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if self.logprobs and request.top_logprobs:
            try:
                return self._post(body | {"logprobs": True, "top_logprobs": request.top_logprobs})
            except _NoLogprobs:
                self.logprobs = False  # this server has no log-probs; stop asking
        return self._post(body)

    def complete(self, requests: Sequence[JudgeRequest]) -> list[JudgeReply]:
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            return list(pool.map(self._complete_one, requests))


def _parse_completion(raw: bytes) -> JudgeReply:
    """A chat-completions body as a reply; raises on any shape it does not expect."""
    choice = json.loads(raw)["choices"][0]
    text = choice["message"]["content"] or ""
    if not isinstance(text, str):
        raise TypeError("content is not text")
    content = (choice.get("logprobs") or {}).get("content")
    tokens = None
    if content:
        tokens = tuple(
            TokenLogprobs(
                str(t["token"]),
                float(t["logprob"]),
                tuple((str(a["token"]), float(a["logprob"])) for a in t.get("top_logprobs") or []),
            )
            for t in content
        )
    return JudgeReply(text, tokens)


class _NoLogprobs(Exception):
    """The server refused the log-probs option (HTTP 400 naming it)."""


# -- the local backend ---------------------------------------------------------------------


class LocalJudge:
    """A ``transformers`` causal LM as judge: greedy replies with the top log-probs of
    every generated token, in left-padded batches. A request with ``labels`` is answered
    by scoring each label as the whole reply: the reply is the likeliest label, and its
    one token's alternatives are the labels with their renormalised log-probs.

    >>> from shiftlab.models import load_causal_lm
    >>> model, tok = load_causal_lm("toyworld:small")
    >>> judge = LocalJudge(model, tok, name="toyworld:small")
    >>> reply = judge.complete([JudgeRequest(({"role": "user", "content": "hi ."},))])[0]
    >>> isinstance(reply.text, str) and len(reply.tokens[0].top) == 20
    True
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str, batch_size: int = 16):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.name = local_judge_name(name)
        self.batch_size = batch_size

    def complete(self, requests: Sequence[JudgeRequest]) -> list[JudgeReply]:
        if any(r.temperature != 0 for r in requests):
            raise ShiftlabError("a local judge decodes greedily; set temperature 0")
        replies: dict[int, JudgeReply] = {}
        labelled = [i for i, r in enumerate(requests) if r.labels]
        free = [i for i, r in enumerate(requests) if not r.labels]
        replies.update(zip(labelled, self._choose([requests[i] for i in labelled]), strict=True))
        replies.update(zip(free, self._generate([requests[i] for i in free]), strict=True))
        return [replies[i] for i in range(len(requests))]

    def _choose(self, requests: Sequence[JudgeRequest]) -> list[JudgeReply]:
        from shiftlab.generation import choice_logprobs

        if not requests:
            return []
        scores = choice_logprobs(
            self.model, self.tokenizer, [r.messages for r in requests],
            [r.labels for r in requests], batch_size=self.batch_size,
        )  # fmt: skip
        replies = []
        for logprobs in scores:
            top = max(logprobs.values())
            norm = top + math.log(sum(math.exp(v - top) for v in logprobs.values()))
            ranked = sorted(((k, v - norm) for k, v in logprobs.items()), key=lambda kv: -kv[1])
            best, best_logprob = ranked[0]
            replies.append(JudgeReply(best, (TokenLogprobs(best, best_logprob, tuple(ranked)),)))
        return replies

    def _generate(self, requests: Sequence[JudgeRequest]) -> list[JudgeReply]:
        import torch

        from shiftlab.generation._generate import _stop_ids
        from shiftlab.generation._scoring import _device, _left_padded
        from shiftlab.training._batching import render_prompt

        device = _device(self.model)
        stop = sorted(_stop_ids(self.model, self.tokenizer))
        replies: list[JudgeReply] = []
        decode = self.tokenizer.decode
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            texts = [render_prompt(self.tokenizer, r.messages) for r in chunk]
            batch = _left_padded(self.tokenizer, texts, device)
            with torch.no_grad():
                out = self.model.generate(
                    **batch,
                    do_sample=False,
                    max_new_tokens=max(r.max_tokens for r in chunk),
                    eos_token_id=stop,
                    pad_token_id=self.tokenizer.pad_token_id,
                    output_scores=True,
                    return_dict_in_generate=True,
                )
            new = out.sequences[:, batch["input_ids"].shape[1] :]
            logps = torch.stack(out.scores, 1).float().log_softmax(-1)
            for row, request in enumerate(chunk):
                tokens = []
                for j, token in enumerate(new[row].tolist()[: request.max_tokens]):
                    if token in stop:
                        break
                    k = min(request.top_logprobs, logps.shape[-1]) or 1
                    top = logps[row, j].topk(k)
                    alternatives = tuple(
                        (decode([i]), v)
                        for i, v in zip(top.indices.tolist(), top.values.tolist(), strict=True)
                    )
                    tokens.append(
                        TokenLogprobs(decode([token]), float(logps[row, j, token]), alternatives)
                    )
                text = "".join(t.token for t in tokens).strip()
                replies.append(JudgeReply(text, tuple(tokens)))
        return replies


# -- the cache -----------------------------------------------------------------------------


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


class _SpecJudge:
    """The judge a spec names, built on first use (a local judge loads a model)."""

    def __init__(self, spec: JudgeSpec):
        self.spec = spec
        self.name = (
            local_judge_name(str(spec.path))
            if spec.kind == "local"
            else http_judge_name(str(spec.base_url), str(spec.model))
        )
        self._judge: Judge | None = None

    def complete(self, requests: Sequence[JudgeRequest]) -> list[JudgeReply]:
        if self._judge is None:
            spec = self.spec
            if spec.kind == "local":
                from shiftlab.models import load_causal_lm

                model, tokenizer = load_causal_lm(str(spec.path))
                self._judge = LocalJudge(
                    model, tokenizer, name=str(spec.path), batch_size=spec.batch_size
                )
            else:
                assert spec.base_url and spec.model
                self._judge = HTTPJudge(
                    spec.base_url, spec.model, api_key_env=spec.api_key_env,
                    max_concurrency=spec.max_concurrency, retries=spec.retries,
                    timeout=spec.timeout_s,
                )  # fmt: skip
        return self._judge.complete(requests)


def make_judge(spec: JudgeSpec, cache: str | Path | None = None) -> Judge:
    """The judge ``spec`` names (built when first called), cached in the SQLite file
    ``cache`` when given.

    >>> from shiftlab.spec import JudgeSpec
    >>> make_judge(JudgeSpec(kind="http", base_url="http://localhost:8000/v1", model="m")).name
    'http:http://localhost:8000/v1#m'
    """
    judge: Judge = _SpecJudge(spec)
    return judge if cache is None else CachedJudge(judge, Path(cache))
