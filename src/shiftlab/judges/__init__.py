"""Judges: language models that grade outputs, behind one interface, cached on disk.

A :class:`Judge` completes chat requests and returns the raw reply: its text and, when
the backend offers them, the top log-probs of each generated token. Two real backends:
:class:`HTTPJudge` (any OpenAI-compatible chat-completions endpoint) and
:class:`LocalJudge` (a ``transformers`` causal LM). :class:`CachedJudge` keeps every raw
reply in an SQLite file keyed by (judge, request), so rescoring makes no calls. The
``read_*`` functions and :func:`weighted_label` read what a reply says.
"""

from shiftlab.judges._cache import CachedJudge
from shiftlab.judges._http import HTTPJudge
from shiftlab.judges._local import LocalJudge
from shiftlab.judges._make import make_judge
from shiftlab.judges._replies import label_probability, read_0_100, read_label, weighted_label
from shiftlab.judges._types import (
    Judge,
    JudgeReply,
    JudgeRequest,
    TokenLogprobs,
    http_judge_name,
    local_judge_name,
)

__all__ = [
    "CachedJudge",
    "HTTPJudge",
    "Judge",
    "JudgeReply",
    "JudgeRequest",
    "LocalJudge",
    "TokenLogprobs",
    "http_judge_name",
    "label_probability",
    "local_judge_name",
    "make_judge",
    "read_0_100",
    "read_label",
    "weighted_label",
]
