"""An OpenAI-compatible chat-completions endpoint as a judge."""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shiftlab.errors import ShiftlabError
from shiftlab.judges._types import JudgeReply, JudgeRequest, TokenLogprobs, http_judge_name


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
