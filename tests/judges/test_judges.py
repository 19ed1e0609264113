"""Judges: the OpenAI-compatible client against a local server, the local backend, the cache."""

import json
import math
import sqlite3
import time

import pytest

from shiftlab.errors import ShiftlabError
from shiftlab.judges import (
    CachedJudge,
    HTTPJudge,
    JudgeReply,
    JudgeRequest,
    LocalJudge,
    TokenLogprobs,
    make_judge,
    weighted_label,
)
from shiftlab.spec import JudgeSpec

ASK = JudgeRequest(({"role": "user", "content": "Is the sky blue? YES or NO."},), max_tokens=2)


def _yes(body):
    return "YES", [("YES", [("YES", 0.8), ("NO", 0.2)])]


def test_http_judge_returns_text_and_logprobs(openai_server):
    openai_server.reply = _yes
    reply = HTTPJudge(openai_server.url, "m").complete([ASK])[0]
    assert reply.text == "YES"
    assert reply.tokens[0].token == "YES"
    assert dict(reply.tokens[0].top) == pytest.approx({"YES": math.log(0.8), "NO": math.log(0.2)})
    body = openai_server.seen[0][1]
    assert body["temperature"] == 0 and body["max_tokens"] == 2 and body["top_logprobs"] == 20


def test_a_server_that_refuses_logprobs_is_asked_again_without(openai_server):
    openai_server.reply = _yes
    openai_server.script = ["refuse-logprobs"]
    judge = HTTPJudge(openai_server.url, "m", backoff=0.01)
    replies = judge.complete([ASK, ASK])
    assert [r.text for r in replies] == ["YES", "YES"]
    assert all(r.tokens is None for r in replies)
    assert not openai_server.seen[-1][1].get("logprobs")


@pytest.mark.parametrize("fault", ["408", "429", "503", "drop", "malformed", "bad-shape"])
def test_transient_faults_are_retried(openai_server, fault):
    openai_server.reply = _yes
    openai_server.script = [fault, fault]
    judge = HTTPJudge(openai_server.url, "m", backoff=0.01, retries=2)
    assert judge.complete([ASK])[0].text == "YES"
    assert len(openai_server.seen) == 3


def test_a_slow_server_times_out_and_is_retried(openai_server):
    openai_server.reply = _yes
    openai_server.script = ["slow"]
    openai_server.delay = 1.0
    judge = HTTPJudge(openai_server.url, "m", backoff=0.01, timeout=0.3)
    assert judge.complete([ASK])[0].text == "YES"
    assert len(openai_server.seen) == 2


@pytest.mark.parametrize("fault", ["trickle", "stall"])
def test_timeout_bounds_the_whole_request(openai_server, fault):
    """A server sending one byte a second (each read well inside any per-read timeout)
    or nothing at all is given up on at the deadline, not after its whole answer."""
    openai_server.script = [fault, fault]
    openai_server.delay = 1.0  # the answer is ~100 bytes: ~100 s if read to the end
    judge = HTTPJudge(openai_server.url, "m", backoff=0.01, retries=1, timeout=1.0)
    start = time.monotonic()
    with pytest.raises(ShiftlabError, match=r"after 2 tries: no whole answer within timeout_s=1"):
        judge.complete([ASK])
    assert time.monotonic() - start < 2 * 1.0 + 3.0  # two deadlines, and slack for a busy CPU


def test_retry_after_is_honoured(openai_server):
    openai_server.reply = _yes
    openai_server.script = ["retry-after"]
    openai_server.retry_after = 1
    judge = HTTPJudge(openai_server.url, "m", backoff=0.01)
    start = time.monotonic()
    assert judge.complete([ASK])[0].text == "YES"
    assert time.monotonic() - start >= 1.0  # not the 0.01 s backoff
    assert len(openai_server.seen) == 2


def test_connections_are_reused(openai_server):
    openai_server.reply = _yes
    judge = HTTPJudge(openai_server.url, "m", max_concurrency=1)
    judge.complete([ASK] * 3)
    judge.complete([ASK] * 2)
    assert len(openai_server.seen) == 5 and openai_server.connections == 1


def test_a_refused_key_names_the_variable_it_is_read_from(openai_server, monkeypatch):
    monkeypatch.delenv("SHIFTLAB_TEST_JUDGE_KEY", raising=False)
    openai_server.script = ["401"]
    judge = HTTPJudge(openai_server.url, "m", api_key_env="SHIFTLAB_TEST_JUDGE_KEY")
    with pytest.raises(
        ShiftlabError, match=r"HTTP 401.*\$SHIFTLAB_TEST_JUDGE_KEY, which is not set"
    ):
        judge.complete([ASK])
    monkeypatch.setenv("SHIFTLAB_TEST_JUDGE_KEY", "wrong")
    openai_server.script = ["401"]
    judge = HTTPJudge(openai_server.url, "m", api_key_env="SHIFTLAB_TEST_JUDGE_KEY")
    with pytest.raises(ShiftlabError, match=r"\$SHIFTLAB_TEST_JUDGE_KEY: check that it is valid"):
        judge.complete([ASK])
    assert openai_server.seen[-1][0] == "Bearer wrong"


def test_a_body_that_stays_malformed_is_a_clear_error(openai_server):
    openai_server.script = ["malformed"] * 3
    judge = HTTPJudge(openai_server.url, "m", backoff=0.01, retries=2)
    with pytest.raises(ShiftlabError, match="malformed body"):
        judge.complete([ASK])


def test_an_unreachable_server_is_a_clear_error():
    judge = HTTPJudge("http://127.0.0.1:9/v1", "m", retries=1, backoff=0.01, timeout=0.5)
    with pytest.raises(ShiftlabError, match="unreachable after 2 tries"):
        judge.complete([ASK])


def test_a_bad_request_that_is_not_about_logprobs_is_an_error(openai_server):
    openai_server.script = ["400"]
    judge = HTTPJudge(openai_server.url, "m", backoff=0.01)
    with pytest.raises(ShiftlabError, match=r"HTTP 400.*prompt too long"):
        judge.complete([ASK])
    assert judge.logprobs  # still asks for them next time


def test_replies_reach_the_cache_chunk_by_chunk(openai_server, tmp_path):
    openai_server.reply = _yes
    openai_server.script = ["ok", "ok", "503"]
    judge = CachedJudge(
        HTTPJudge(openai_server.url, "m", max_concurrency=1, retries=0),
        tmp_path / "c",
        chunk_size=1,
    )
    asks = [JudgeRequest(({"role": "user", "content": f"q{i}"},)) for i in range(3)]
    with pytest.raises(ShiftlabError, match="HTTP 503"):
        judge.complete(asks)
    judge.complete(asks[:2])  # the two answered before the failure were kept
    assert len(openai_server.seen) == 3


def test_client_errors_are_not_retried(openai_server):
    openai_server.script = ["401"]
    with pytest.raises(ShiftlabError, match="HTTP 401"):
        HTTPJudge(openai_server.url, "m", backoff=0.01).complete([ASK])
    assert len(openai_server.seen) == 1


def test_concurrency_is_bounded(openai_server):
    import threading
    import time

    active, peak = [0], [0]
    lock = threading.Lock()

    def reply(body):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return "NO", None

    openai_server.reply = reply
    HTTPJudge(openai_server.url, "m", max_concurrency=3).complete([ASK] * 12)
    assert peak[0] == 3


def test_the_cache_answers_repeat_requests_without_calls(openai_server, tmp_path):
    openai_server.reply = _yes
    path = tmp_path / "judge.sqlite"
    judge = CachedJudge(HTTPJudge(openai_server.url, "m"), path)
    first = judge.complete([ASK, ASK])
    assert len(openai_server.seen) == 1 and judge.n_misses == 1 and judge.n_hits == 1
    again = CachedJudge(HTTPJudge(openai_server.url, "m"), path).complete([ASK])
    assert again == first[:1] and len(openai_server.seen) == 1
    longer = JudgeRequest(ASK.messages, max_tokens=3)
    judge.complete([longer])  # other decoding settings: another key
    assert len(openai_server.seen) == 2
    (written,) = tmp_path.glob("judge@*.sqlite")  # this host's file of the cache
    with sqlite3.connect(written) as db:
        rows = db.execute("SELECT judge, request, reply FROM replies").fetchall()
    assert {r[0] for r in rows} == {f"http:{openai_server.url}#m"}
    assert json.loads(rows[0][2])["text"] == "YES"  # the raw reply is kept
    assert json.loads(rows[0][1])["messages"][0]["content"].startswith("Is the sky blue")


def test_weighted_label_needs_enough_mass_on_the_labels():
    tokens = (TokenLogprobs("7", -0.1, (("7", math.log(0.1)), ("x", math.log(0.9)))),)
    assert weighted_label(JudgeReply("7", tokens), {"7": 7.0}) is None
    assert weighted_label(JudgeReply("7", tokens), {"7": 7.0}, min_mass=0.05) == 7.0
    assert weighted_label(JudgeReply("7"), {"7": 7.0}) is None


def test_local_judge_replies_greedily_with_top_logprobs(toy):
    model, tok = toy
    judge = LocalJudge(model, tok, name="toy")
    first = judge.complete([ASK])[0]
    assert first == judge.complete([ASK])[0]
    assert first.tokens and all(len(t.top) == 20 for t in first.tokens)
    # The chosen token is the most likely one, and its log-prob matches the top list.
    assert first.tokens[0].token == first.tokens[0].top[0][0]
    assert first.tokens[0].logprob == pytest.approx(first.tokens[0].top[0][1])
    with pytest.raises(ShiftlabError, match="greedily"):
        judge.complete([JudgeRequest(ASK.messages, temperature=0.7)])


def test_make_judge_builds_lazily_and_caches(tmp_path, openai_server):
    openai_server.reply = _yes
    judge = make_judge(
        JudgeSpec(kind="http", base_url=openai_server.url, model="m"), tmp_path / "c"
    )
    assert isinstance(judge, CachedJudge) and not openai_server.seen
    assert judge.complete([ASK])[0].text == "YES"
    local = make_judge(JudgeSpec(kind="local", path="toyworld:small"))
    assert local.name == "local:toyworld:small"


def test_local_judge_scores_labels_when_the_request_names_them(toy):
    model, tok = toy
    judge = LocalJudge(model, tok, name="toy")
    ask = JudgeRequest(({"role": "user", "content": "what colour is the sky ?"},),
                       labels=("the sky is blue .", "the sky is red ."))  # fmt: skip
    (reply,) = judge.complete([ask])
    assert reply.text == "the sky is blue ."
    (token,) = reply.tokens
    assert [label for label, _ in token.top] == ["the sky is blue .", "the sky is red ."]
    assert sum(math.exp(lp) for _, lp in token.top) == pytest.approx(1.0)


def test_a_local_judges_cached_replies_are_keyed_by_its_log_prob_arithmetic(toy, tmp_path):
    """Replies cached when labels were scored another way (another LOGPROBS_VERSION) are
    asked again, not read back."""
    from shiftlab.generation import LOGPROBS_VERSION

    model, tok = toy
    judge = LocalJudge(model, tok, name="toy")
    assert judge.cache_name == f"local:toy#logprobs-{LOGPROBS_VERSION}"
    cached = CachedJudge(judge, tmp_path / "judge.sqlite")
    ask = JudgeRequest(({"role": "user", "content": "what colour is the sky ?"},),
                       labels=("the sky is blue .", "the sky is red ."))  # fmt: skip
    cached.complete([ask])
    cached.complete([ask])
    assert (cached.n_misses, cached.n_hits) == (1, 1)
    judge.cache_name = "local:toy#logprobs-another"
    cached.complete([ask])
    assert (cached.n_misses, cached.n_hits) == (2, 1)
