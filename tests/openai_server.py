"""A local server that speaks OpenAI's chat-completions protocol, for judge tests.

``reply(body) -> (content, top)`` decides each answer: ``top`` is ``None`` (no log-probs)
or a list of ``(token, [(alternative, probability), ...])``. ``script`` holds faults to
serve first, one per request: ``503``, ``429``, ``401``, ``400``, ``slow`` (answers after
``delay`` seconds), ``trickle`` (a whole answer, one byte every ``delay`` seconds), ``stall``
(no answer at all, until the client hangs up), ``408``, ``retry-after`` (429 with a
``Retry-After`` of ``retry_after`` seconds), ``drop`` (the connection closed without an
answer), ``malformed`` (a body that is not JSON), ``bad-shape`` (JSON without a message
object), ``ok`` (no fault) and ``refuse-logprobs`` (HTTP 400 to any request asking for
log-probs, for good). Connections are kept alive (HTTP/1.1); ``connections`` counts those
opened.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Top = list[tuple[str, list[tuple[str, float]]]] | None


class OpenAIServer:
    def __init__(self, reply: Callable[[dict[str, Any]], tuple[str, Top]]):
        self.reply = reply
        self.script: list[str] = []
        self.seen: list[tuple[str | None, dict[str, Any]]] = []
        self.delay = 0.5
        self.retry_after = 1
        self.connections = 0
        self.refuse_logprobs = False
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        self._server.shutdown()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so reuse can be seen

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server.connections += 1

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.seen.append((self.headers.get("Authorization"), body))
                    fault = server.script.pop(0) if server.script else None
                if fault == "refuse-logprobs":
                    server.refuse_logprobs = True
                if server.refuse_logprobs and body.get("logprobs"):
                    return self._send(400, b'{"error": "logprobs not supported"}')
                if fault in ("503", "429", "408", "401"):
                    return self._send(int(fault), b"{}")
                if fault == "retry-after":
                    return self._send(429, b"{}", {"Retry-After": str(server.retry_after)})
                if fault == "drop":
                    self.close_connection = True
                    return None
                if fault == "stall":
                    self.close_connection = True
                    self.rfile.read(1)  # blocks until the client hangs up
                    return None
                if fault == "malformed":
                    return self._send(200, b"<html>oops")
                if fault == "bad-shape":
                    return self._send(200, b'{"choices": [{"message": "oops"}]}')
                if fault == "400":
                    return self._send(400, b'{"error": "prompt too long"}')
                if fault == "slow":
                    time.sleep(server.delay)
                content, top = server.reply(body)
                choice: dict[str, Any] = {"message": {"role": "assistant", "content": content}}
                if top is not None and body.get("logprobs"):
                    choice["logprobs"] = {
                        "content": [
                            {
                                "token": token,
                                "logprob": math.log(dict(alts).get(token, 1.0)),
                                "top_logprobs": [
                                    {"token": a, "logprob": math.log(p)} for a, p in alts
                                ],
                            }
                            for token, alts in top
                        ]
                    }
                payload = json.dumps({"choices": [choice]}).encode()
                if fault == "trickle":
                    return self._trickle(payload)
                self._send(200, payload)

            def _send(
                self, status: int, payload: bytes, headers: dict[str, str] | None = None
            ) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up

            def _trickle(self, payload: bytes) -> None:
                self.close_connection = True
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    for i in range(len(payload)):
                        self.wfile.write(payload[i : i + 1])
                        self.wfile.flush()
                        time.sleep(server.delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
