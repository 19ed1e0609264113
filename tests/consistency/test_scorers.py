"""Scorers: the toyworld reward model, an LM judge, and an HTTP judge on a local server."""

import pytest

from shiftlab.behaviours import MethodPrompts
from shiftlab.consistency import JudgeScorer, LMJudgeScorer, RewardModelScorer
from shiftlab.errors import ShiftlabError
from shiftlab.judges import HTTPJudge

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


def _rubric_reply(body):
    good = "ANSWER-OK" in body["messages"][0]["content"]
    tokens = [(t, []) for t in ["Fine", ".\n", "Final", " Score", ":"]]
    return f"Fine.\nFinal Score: {5 if good else 1}", [
        *tokens,
        (" 5", [(" 5", 0.75), (" 1", 0.25)]),
    ]


def test_http_judge_weights_score_tokens_by_probability(openai_server, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "secret")
    openai_server.reply = _rubric_reply
    judge = JudgeScorer(
        HTTPJudge(openai_server.url, "m", api_key_env="JUDGE_KEY", backoff=0.01), MethodPrompts()
    )
    assert judge.score([PROMPT], ["ANSWER-OK"]) == [pytest.approx(0.75 * 5 + 0.25 * 1)]
    auth, body = openai_server.seen[0]
    assert auth == "Bearer secret" and body["model"] == "m" and body["logprobs"] is True
    assert "what colour is the sky ?" in body["messages"][0]["content"]


def test_http_judge_parses_the_text_without_logprobs_and_retries(openai_server):
    openai_server.reply = lambda body: (_rubric_reply(body)[0], None)
    openai_server.script = ["503", "503"]
    judge = JudgeScorer(
        HTTPJudge(openai_server.url, "m", backoff=0.01, max_concurrency=2), MethodPrompts()
    )
    assert judge.score([PROMPT, PROMPT], ["ANSWER-OK", "ANSWER-BAD"]) == [5.0, 1.0]
    assert len(openai_server.seen) == 4


def test_http_judge_gives_up_with_a_clear_error(openai_server):
    openai_server.script = ["503"] * 10
    judge = JudgeScorer(HTTPJudge(openai_server.url, "m", retries=1, backoff=0.01), MethodPrompts())
    with pytest.raises(ShiftlabError, match="HTTP 503"):
        judge.score([PROMPT], ["x"])


def test_a_reply_without_a_score_is_an_error_naming_the_judge(openai_server):
    openai_server.reply = lambda body: ("I would rather not say.", None)
    judge = JudgeScorer(HTTPJudge(openai_server.url, "m"), MethodPrompts())
    with pytest.raises(ShiftlabError, match="gave no 'Final Score'"):
        judge.score([PROMPT], ["x"])
