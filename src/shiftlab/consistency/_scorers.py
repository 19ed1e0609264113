"""Candidate scorers behind one interface: a reward model, a causal-LM judge, an HTTP judge.

Every scorer maps (prompt, candidate text) pairs to one float per pair, higher = better.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import torch

from shiftlab.behaviours._types import Message, MethodPrompts
from shiftlab.errors import ShiftlabError
from shiftlab.generation import expected_score
from shiftlab.spec import ScorerSpec


class CandidateScorer(Protocol):
    """Scores candidates; ``name`` identifies the scorer in pools and manifests."""

    name: str

    def score(self, prompts: Sequence[Sequence[Message]], texts: Sequence[str]) -> list[float]:
        """One score per (prompt, text) pair."""
        ...


def _question(prompt: Sequence[Message]) -> str:
    return "\n\n".join(m["content"] for m in prompt if m["role"] != "system")


def judge_messages(
    prompts: MethodPrompts, prompt: Sequence[Message], text: str
) -> tuple[dict[str, str], ...]:
    """The rubric filled in with the question and the candidate, as one user turn."""
    filled = prompts.rubric.replace("{original_question_text}", _question(prompt)).replace(
        "{generated_answer_text}", text
    )
    return ({"role": "user", "content": filled},)


class RewardModelScorer:
    """A sequence-classification reward model: the score is its (first) logit.

    The candidate is rendered with the reward model's own chat template when it has one.
    """

    def __init__(self, path: str | Path, *, batch_size: int = 16, device: str | None = None):
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        self.name = f"reward_model:{path}"
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise ShiftlabError(
                f"scorer path {str(path)!r}: no config.json; expected a model folder"
            )
        config = AutoConfig.from_pretrained(folder)
        architectures = config.architectures or []
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise ShiftlabError(
                f"scorer path {str(path)!r} is not a sequence-classification model "
                f"(its config names {architectures or 'no architecture'})"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        if device:
            self.model.to(device)
        self.batch_size = batch_size

    def _render(self, prompt: Sequence[Message], text: str) -> str:
        messages = [*map(dict, prompt), {"role": "assistant", "content": text}]
        if getattr(self.tokenizer, "chat_template", None):
            return str(self.tokenizer.apply_chat_template(messages, tokenize=False))
        return f"{_question(prompt)}\n\n{text}"

    @torch.no_grad()
    def score(self, prompts: Sequence[Sequence[Message]], texts: Sequence[str]) -> list[float]:
        rendered = [self._render(p, t) for p, t in zip(prompts, texts, strict=True)]
        device = next(self.model.parameters()).device
        scores: list[float] = []
        for start in range(0, len(rendered), self.batch_size):
            batch = self.tokenizer(
                rendered[start : start + self.batch_size],
                add_special_tokens=False,
                padding=True,
                truncation=True,
                return_tensors="pt",
            ).to(device)
            scores += self.model(**batch).logits[:, 0].float().tolist()
        return scores


class LMJudgeScorer:
    """A causal LM grading each candidate with a rubric: the probability-weighted score over
    the rubric's score tokens (self-rewarding passes the organism itself).
    """

    def __init__(
        self, model: Any, tokenizer: Any, prompts: MethodPrompts, *, name: str = "judge",
        batch_size: int = 32,
    ):  # fmt: skip
        self.name = name
        self.model, self.tokenizer, self.prompts = model, tokenizer, prompts
        self.batch_size = batch_size

    def score(self, prompts: Sequence[Sequence[Message]], texts: Sequence[str]) -> list[float]:
        judged = [judge_messages(self.prompts, p, t) for p, t in zip(prompts, texts, strict=True)]
        return expected_score(
            self.model,
            self.tokenizer,
            judged,
            prefix=self.prompts.score_prefix,
            labels=self.prompts.score_tokens,
            batch_size=self.batch_size,
        )


_FINAL_SCORE = re.compile(r"final score\s*:?\s*\[?(\d+(?:\.\d+)?)", re.IGNORECASE)


class HTTPJudgeScorer:
    """An OpenAI-compatible chat-completions judge.

    Uses the top log-probs of the first score token when the endpoint returns them
    (probability-weighted, like :class:`LMJudgeScorer`), else parses ``Final Score: N`` from
    the reply. Requests run ``max_concurrency`` at a time, with retries and exponential
    backoff on connection errors, 429 and 5xx answers. The key is read from the environment
    variable ``api_key_env`` (may be unset for local servers).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        prompts: MethodPrompts,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 60.0,
    ):
        self.name = f"http:{base_url}#{model}"
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.prompts = model, prompts
        self.key = os.environ.get(api_key_env)
        self.max_concurrency, self.retries = max_concurrency, retries
        self.backoff, self.timeout = backoff, timeout

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = json.dumps(body).encode()
        attempt = 0
        while True:
            request = urllib.request.Request(self.url, data=data, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    answer: dict[str, Any] = json.loads(response.read())
                    return answer
            except urllib.error.HTTPError as error:
                transient = error.code == 429 or error.code >= 500
                if not transient or attempt == self.retries:
                    raise ShiftlabError(
                        f"judge {self.url} answered HTTP {error.code}: {error.reason}"
                    ) from None
            except (urllib.error.URLError, TimeoutError) as error:
                if attempt == self.retries:
                    raise ShiftlabError(f"judge {self.url} unreachable: {error}") from None
            time.sleep(self.backoff * 2**attempt)
            attempt += 1

    def _score_one(self, messages: tuple[dict[str, str], ...]) -> float:
        labels = self.prompts.score_tokens
        body = {
            "model": self.model,
            "messages": list(messages),
            "temperature": 0,
            "max_tokens": 256,
            "logprobs": True,
            "top_logprobs": 20,
        }
        choice = self._post(body)["choices"][0]
        weighted = _weighted_from_logprobs(choice.get("logprobs"), labels)
        if weighted is not None:
            return weighted
        content = choice.get("message", {}).get("content") or ""
        match = _FINAL_SCORE.search(content)
        if match is None:
            raise ShiftlabError(f"judge {self.url} gave no 'Final Score' in: {content[:200]!r}")
        return float(match.group(1))

    def score(self, prompts: Sequence[Sequence[Message]], texts: Sequence[str]) -> list[float]:
        judged = [judge_messages(self.prompts, p, t) for p, t in zip(prompts, texts, strict=True)]
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            return list(pool.map(self._score_one, judged))


def _weighted_from_logprobs(logprobs: Any, labels: Sequence[str]) -> float | None:
    """Probability-weighted score from the first content token whose top log-probs hold
    score labels (after a ``Final Score:`` prefix when there is one)."""
    if not logprobs or not logprobs.get("content"):
        return None
    tokens = logprobs["content"]
    text = "".join(t["token"] for t in tokens)
    match = _FINAL_SCORE.search(text)
    ends = list(itertools.accumulate(len(t["token"]) for t in tokens))
    start = bisect.bisect_right(ends, match.start(1)) if match else 0
    values = {label: i + 1 for i, label in enumerate(labels)}
    for token in tokens[start:]:
        mass: dict[str, float] = {}
        for top in token.get("top_logprobs", []):
            key = top["token"].strip()
            if key in values:
                mass[key] = mass.get(key, 0.0) + math.exp(top["logprob"])
        if mass:
            total = sum(mass.values())
            return sum(values[k] * p for k, p in mass.items()) / total
    return None


def make_scorer(
    spec: ScorerSpec | None, prompts: MethodPrompts, *, organism: Any = None, tokenizer: Any = None
) -> CandidateScorer | None:
    """The scorer a method's spec names; ``None`` spec on toyworld means toyworld's reward
    model. ``self`` judges with the organism (``organism``, ``tokenizer``)."""
    if spec is None or spec.kind == "toyworld":
        from shiftlab.toyworld import toyworld_reward_model_dir

        return RewardModelScorer(toyworld_reward_model_dir(progress=False))
    if spec.kind == "reward_model":
        return RewardModelScorer(str(spec.path), batch_size=spec.batch_size)
    if spec.kind == "self":
        return LMJudgeScorer(organism, tokenizer, prompts, name="self", batch_size=spec.batch_size)
    if spec.kind == "judge":
        from shiftlab.models import load_causal_lm

        model, judge_tokenizer = load_causal_lm(str(spec.path))
        return LMJudgeScorer(
            model.eval(), judge_tokenizer, prompts, name=f"judge:{spec.path}",
            batch_size=spec.batch_size,
        )  # fmt: skip
    assert spec.base_url and spec.model
    return HTTPJudgeScorer(
        spec.base_url, spec.model, prompts, api_key_env=spec.api_key_env,
        max_concurrency=spec.max_concurrency,
    )  # fmt: skip
