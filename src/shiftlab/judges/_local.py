"""A ``transformers`` causal LM as a judge."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from shiftlab.errors import ShiftlabError
from shiftlab.judges._types import JudgeReply, JudgeRequest, TokenLogprobs, local_judge_name


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
        from shiftlab.generation import LOGPROBS_VERSION

        self.name = local_judge_name(name)
        # Labelled requests are answered by log-probs: a cached reply is this judge's only
        # while they are computed as they were (see CachedJudge).
        self.cache_name = f"{self.name}#logprobs-{LOGPROBS_VERSION}"
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
        from shiftlab.generation import greedy_top_logprobs

        decode = self.tokenizer.decode
        generated = greedy_top_logprobs(
            self.model, self.tokenizer, [r.messages for r in requests],
            max_new_tokens=[r.max_tokens for r in requests],
            top_logprobs=[r.top_logprobs for r in requests], batch_size=self.batch_size,
        )  # fmt: skip
        replies = []
        for scored in generated:
            tokens = tuple(
                TokenLogprobs(
                    decode([t.token_id]), t.logprob, tuple((decode([i]), v) for i, v in t.top)
                )
                for t in scored
            )
            replies.append(JudgeReply("".join(t.token for t in tokens).strip(), tokens))
        return replies
