"""The judge a spec names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shiftlab.judges._cache import CachedJudge
from shiftlab.judges._http import HTTPJudge
from shiftlab.judges._local import LocalJudge
from shiftlab.judges._types import (
    Judge,
    JudgeReply,
    JudgeRequest,
    http_judge_name,
    local_judge_name,
)
from shiftlab.spec import JudgeSpec


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
