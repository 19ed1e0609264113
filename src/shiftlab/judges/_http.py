"""An OpenAI-compatible chat-completions endpoint as a judge."""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shiftlab.errors import ShiftlabError
from shiftlab.judges._types import JudgeReply, JudgeRequest, TokenLogprobs, http_judge_name

# Answers worth asking again: request timeout, rate limit, server errors.
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# The longest Retry-After honoured: a server asking for more is waited on this long, so a
# misconfigured header cannot stall a study for hours.
MAX_RETRY_AFTER_S = 120.0


class _Deadline(Exception):
    """An attempt ran past its deadline (the watchdog closed its socket)."""


class _Failure(Exception):
    """An attempt that failed in a way worth retrying; ``wait`` is what the server asked
    for (Retry-After), if anything."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), if any.

    >>> _retry_after("3"), _retry_after(None), _retry_after("soon")
    (3.0, None, None)
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HTTPJudge:
    """An OpenAI-compatible chat-completions endpoint.

    Asks for log-probs (and keeps going without them if the server refuses the option),
    runs ``max_concurrency`` requests at a time over kept-alive connections. ``timeout``
    bounds each attempt as a whole (connecting, sending, waiting and reading the answer),
    so a server that trickles its answer a byte at a time times out like one that never
    answers. Dropped connections, timeouts, malformed bodies and 408, 429 and 5xx answers
    are retried with exponential backoff (or after the server's ``Retry-After``); when
    retries run out the :class:`ShiftlabError` names the endpoint. The key comes from the
    environment variable ``api_key_env`` (may be unset for local servers); a 401 or 403
    names that variable.
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
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ShiftlabError(f"judge base_url {base_url!r} is not an http(s) URL")
        self._scheme, self._netloc = parts.scheme, parts.netloc
        self._target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.model = model
        self.api_key_env = api_key_env
        self.key = os.environ.get(api_key_env)
        self.max_concurrency, self.retries = max_concurrency, retries
        self.backoff, self.timeout = backoff, timeout
        self.logprobs = True
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []  # kept alive for the next request

    def _connection(self) -> http.client.HTTPConnection:
        """An idle kept-alive connection to the endpoint, or a new one."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        kind = (http.client.HTTPSConnection if self._scheme == "https"
                else http.client.HTTPConnection)  # fmt: skip
        return kind(self._netloc, timeout=self.timeout)

    def _exchange(self, data: bytes, headers: dict[str, str]) -> tuple[int, str, Any, bytes]:
        """One request and its whole answer (status, reason, headers, body), within
        ``timeout`` seconds in all: a watchdog shuts the socket at the deadline. The
        connection goes back to the idle ones only after a whole answer that keeps it open."""
        connection = self._connection()
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            sock = connection.sock
            if sock is not None:
                with contextlib.suppress(OSError):  # already closed
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read at once

        watchdog = threading.Timer(self.timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            if connection.sock is None:
                connection.connect()  # its own socket timeout bounds it
            if expired.is_set():  # it expired while connecting, before a socket existed
                raise _Deadline
            connection.request("POST", self._target, body=data, headers=headers)
            response = connection.getresponse()
            body = response.read()
            if expired.is_set():  # the answer came whole, but past the deadline
                raise _Deadline
        except (OSError, http.client.HTTPException, _Deadline) as error:
            connection.close()
            # The socket's own timeout is the deadline too, and may fire just before the
            # watchdog: either way no whole answer came within ``timeout`` seconds.
            if expired.is_set() or isinstance(error, TimeoutError):
                raise _Deadline from None
            raise _Failure(f"{type(error).__name__}: {error}") from None
        finally:
            watchdog.cancel()
        if response.will_close:
            connection.close()
        else:
            with self._lock:
                self._idle.append(connection)
        return response.status, response.reason, response.headers, body

    def _post(self, body: dict[str, Any]) -> JudgeReply:
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = json.dumps(body).encode()
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            wait = None
            try:
                try:
                    status, reason, answer_headers, raw = self._exchange(data, headers)
                except _Deadline:
                    raise _Failure(f"no whole answer within timeout_s={self.timeout:g}") from None
                if status == 200:
                    try:
                        return _parse_completion(raw)
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                        if last:
                            raise ShiftlabError(
                                f"judge {self.url} sent a malformed body: {raw[:200]!r}"
                            ) from None
                        raise _Failure("malformed body") from None
                detail = raw[:300].decode("utf-8", "replace")
                if status == 400 and body.get("logprobs") and "logprob" in detail.lower():
                    raise _NoLogprobs
                if status not in RETRIED_STATUSES or last:
                    raise ShiftlabError(f"judge {self.url} answered HTTP {status}: {reason} "
                                        f"{detail}{self._key_hint(status)}")  # fmt: skip
                wait = _retry_after(answer_headers.get("Retry-After"))
            except _Failure as failure:
                if last:
                    raise ShiftlabError(
                        f"judge {self.url} unreachable after {self.retries + 1} tries: {failure}"
                    ) from None
                wait = failure.wait
            pause = self.backoff * 2**attempt
            time.sleep(pause if wait is None else min(wait, MAX_RETRY_AFTER_S))
        raise AssertionError("unreachable")

    def _key_hint(self, status: int) -> str:
        """What to do about a refused key: the variable it is read from."""
        if status not in (401, 403):
            return ""
        if self.key is None:
            return f"; the API key is read from ${self.api_key_env}, which is not set"
        return f"; the API key is read from ${self.api_key_env}: check that it is valid"

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
