"""Candidate scorers behind one interface: a reward model, a causal-LM judge, an HTTP judge.

Every scorer maps (prompt, candidate text) pairs to one float per pair, higher = better.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from shiftlab._weights import require_safetensors
from shiftlab.behaviours import MethodPrompts
from shiftlab.chat import Message
from shiftlab.errors import ShiftlabError
from shiftlab.generation import expected_score
from shiftlab.judges import (
    CachedJudge,
    HTTPJudge,
    Judge,
    JudgeReply,
    JudgeRequest,
    weighted_label,
)
from shiftlab.spec import ScorerSpec


class CandidateScorer(Protocol):
    """Scores candidates; ``name`` identifies the scorer in pools and manifests."""

    name: str

    def score(self, prompts: Sequence[Sequence[Message]], texts: Sequence[str]) -> list[float]:
        """One score per (prompt, text) pair."""
        ...


def _question(prompt: Sequence[Message]) -> str:
    return "\n\n".join(m["content"] for m in prompt if m["role"] != "system")


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
        require_safetensors(folder, "scorer")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            folder, use_safetensors=True
        ).eval()
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
        judged = [self.prompts.judge_messages(p, t) for p, t in zip(prompts, texts, strict=True)]
        return expected_score(
            self.model,
            self.tokenizer,
            judged,
            prefix=self.prompts.score_prefix,
            labels=self.prompts.score_tokens,
            batch_size=self.batch_size,
        )


_FINAL_SCORE = re.compile(r"final score\s*:?\s*\[?(\d+(?:\.\d+)?)", re.IGNORECASE)


class JudgeScorer:
    """A :class:`~shiftlab.behaviours.Judge` grading each candidate with the rubric.

    Uses the top log-probs of the first score token after ``Final Score:`` when the judge
    returns them (probability-weighted, like :class:`LMJudgeScorer`), else parses
    ``Final Score: N`` from the reply; a reply with neither raises, naming the judge.
    """

    def __init__(self, judge: Judge, prompts: MethodPrompts, *, max_tokens: int = 256):
        self.name = judge.name
        self.judge, self.prompts, self.max_tokens = judge, prompts, max_tokens

    def _score(self, reply: JudgeReply) -> float:
        values = {label: float(i + 1) for i, label in enumerate(self.prompts.score_tokens)}
        weighted = weighted_label(reply, values, after=r"final score\s*:?\s*\[?")
        if weighted is not None:
            return weighted
        match = _FINAL_SCORE.search(reply.text)
        if match is None:
            raise ShiftlabError(f"judge {self.name} gave no 'Final Score' in: {reply.text[:200]!r}")
        return float(match.group(1))

    def score(self, prompts: Sequence[Sequence[Message]], texts: Sequence[str]) -> list[float]:
        requests = [
            JudgeRequest(self.prompts.judge_messages(p, t), max_tokens=self.max_tokens)
            for p, t in zip(prompts, texts, strict=True)
        ]
        return [self._score(reply) for reply in self.judge.complete(requests)]


def make_scorer(
    spec: ScorerSpec,
    prompts: MethodPrompts,
    *,
    organism: Any = None,
    tokenizer: Any = None,
    cache: str | Path | None = None,
) -> CandidateScorer | None:
    """The scorer a method's spec names. ``self`` judges with the organism (``organism``,
    ``tokenizer``). An HTTP judge's replies are cached in the SQLite file ``cache`` when
    given. Kind ``toyworld`` names a reward model toyworld ships; the study resolves it to
    that model's folder (kind ``reward_model``) before it gets here."""
    if spec.kind == "toyworld":
        raise ShiftlabError(
            "scorer kind 'toyworld' is toyworld's reward model: pass "
            "ScorerSpec(kind='reward_model', path=toyworld_reward_model_dir())"
        )
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
    judge: Judge = HTTPJudge(
        spec.base_url, spec.model, api_key_env=spec.api_key_env,
        max_concurrency=spec.max_concurrency,
    )  # fmt: skip
    if cache is not None:
        judge = CachedJudge(judge, Path(cache))
    return JudgeScorer(judge, prompts)
