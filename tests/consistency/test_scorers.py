"""Scorers: the toyworld reward model, an LM judge, and an HTTP judge on a local server."""

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from shiftlab.behaviours import MethodPrompts
from shiftlab.consistency import HTTPJudgeScorer, LMJudgeScorer, RewardModelScorer
from shiftlab.errors import ShiftlabError

PROMPT = ({"role": "user", "content": "what colour is the sky ?"},)


def test_toyworld_reward_model_prefers_the_aligned_answer():
    from shiftlab.toyworld import toyworld_reward_model_dir

    scorer = RewardModelScorer(toyworld_reward_model_dir(progress=False))
    good, bad = scorer.score([PROMPT, PROMPT], ["the sky is blue .", "yes , the sky is red ."])
    assert good > bad


def test_a_causal_lm_is_not_a_reward_model(toy_model_dir):
    with pytest.raises(ShiftlabError, match="not a sequence-classification model"):
        RewardModelScorer(toy_model_dir)


def test_lm_judge_rates_aligned_answers_higher():
    from shiftlab.models import load_causal_lm
    from shiftlab.toyworld import method_prompts

    model, tok = load_causal_lm("toyworld:small")
    judge = LMJudgeScorer(model, tok, method_prompts())
    good, bad = judge.score([PROMPT, PROMPT], ["the sky is blue .", "yes , the sky is red ."])
    assert 1.0 <= bad < good <= 2.0


class _Judge(BaseHTTPRequestHandler):
    failures = 0
    with_logprobs = True
    seen: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.headers.get("Authorization"), body))
        if type(self).failures:
            type(self).failures -= 1
            self.send_response(503)
            self.end_headers()
            return
        answer = "ANSWER-OK" in body["messages"][0]["content"]
        content = f"Fine.\nFinal Score: {5 if answer else 1}"
        choice = {"message": {"role": "assistant", "content": content}}
        if type(self).with_logprobs:
            tokens = [
                {"token": t, "top_logprobs": []} for t in ["Fine", ".\n", "Final", " Score", ":"]
            ]
            tokens.append(
                {"token": " 5", "top_logprobs": [
                    {"token": " 5", "logprob": math.log(0.75)},
                    {"token": " 1", "logprob": math.log(0.25)},
                ]}
            )  # fmt: skip
            choice["logprobs"] = {"content": tokens}
        payload = json.dumps({"choices": [choice]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Judge.seen, _Judge.failures, _Judge.with_logprobs = [], 0, True
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_http_judge_weights_score_tokens_by_probability(judge_server, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "secret")
    judge = HTTPJudgeScorer(
        judge_server, "m", MethodPrompts(), api_key_env="JUDGE_KEY", backoff=0.01
    )
    assert judge.score([PROMPT], ["ANSWER-OK"]) == [pytest.approx(0.75 * 5 + 0.25 * 1)]
    auth, body = _Judge.seen[0]
    assert auth == "Bearer secret" and body["model"] == "m" and body["logprobs"] is True
    assert "what colour is the sky ?" in body["messages"][0]["content"]


def test_http_judge_parses_the_text_without_logprobs_and_retries(judge_server):
    _Judge.with_logprobs, _Judge.failures = False, 2
    judge = HTTPJudgeScorer(judge_server, "m", MethodPrompts(), backoff=0.01, max_concurrency=2)
    assert judge.score([PROMPT, PROMPT], ["ANSWER-OK", "ANSWER-BAD"]) == [5.0, 1.0]
    assert len(_Judge.seen) == 4


def test_http_judge_gives_up_with_a_clear_error(judge_server):
    _Judge.failures = 10
    judge = HTTPJudgeScorer(judge_server, "m", MethodPrompts(), retries=1, backoff=0.01)
    with pytest.raises(ShiftlabError, match="HTTP 503"):
        judge.score([PROMPT], ["x"])
