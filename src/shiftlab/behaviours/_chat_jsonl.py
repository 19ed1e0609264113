"""The consistency-misalignment study's chat-JSONL suite format.

A folder per behaviour with ``induction.jsonl``, ``consistency.jsonl``,
``act_bct_clean.jsonl``, ``act_bct_wrapped.jsonl`` and ``eval.jsonl`` (and optionally
``rubric.txt``); each line holds ``messages`` (chat turns) plus per-behaviour fields, which
are kept as ``Example.meta``. A row's ``system_prompt`` becomes its system message.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from shiftlab._hashing import content_hash, file_hash
from shiftlab.behaviours._jsonl import chat_messages, read_jsonl
from shiftlab.behaviours._study_rules import study_scorer
from shiftlab.behaviours._types import Example, MethodPrompts, PairExample, Suite
from shiftlab.errors import DataError

FILES = ("induction", "consistency", "act_bct_clean", "act_bct_wrapped", "eval")


def _split_prompt_target(
    messages: list[dict[str, str]], where: str, *, need_target: bool
) -> tuple[tuple[dict[str, str], ...], str | None]:
    if messages[-1]["role"] == "assistant":
        if len(messages) == 1:
            raise DataError(f"{where}: field 'messages' holds no prompt before the assistant turn")
        return tuple(messages[:-1]), messages[-1]["content"]
    if need_target:
        raise DataError(f"{where}: expected the last message to be the assistant's target")
    return tuple(messages), None


def _read_examples(path: Path, *, need_target: bool) -> list[Example]:
    examples = []
    for number, record in read_jsonl(path):
        where = f"{path}:{number}"
        prompt, target = _split_prompt_target(
            chat_messages(record, where), where, need_target=need_target
        )
        meta: dict[str, Any] = {k: v for k, v in record.items() if k != "messages"}
        system = meta.get("system_prompt")
        if system is not None:
            if not isinstance(system, str):
                raise DataError(f"{where}: field 'system_prompt' must be a string")
            if prompt[0]["role"] != "system":
                prompt = ({"role": "system", "content": system}, *prompt)
            elif prompt[0]["content"] != system:
                raise DataError(
                    f"{where}: field 'system_prompt' differs from the row's own system message"
                )
        examples.append(Example(f"{path.stem}-{number}", prompt, target, meta))
    return examples


def load_chat_jsonl_suite(folder: str | Path, behaviour: str) -> Suite:
    """Load one of the study's behaviours from a folder of chat-JSONL files, with the
    behaviour's scoring rules; the eval rows' fields those rules read are checked here.

    After ``shiftlab data fetch consistency-misalignment``:

    >>> from shiftlab.behaviours import data_home
    >>> folder = data_home() / "consistency-misalignment" / "spurious_correlation"
    >>> suite = load_chat_jsonl_suite(folder, "spurious_correlation")
    >>> suite.scorer(suite.eval[0], suite.eval[0].target).label
    'aligned'
    """
    folder = Path(folder)
    missing = [f"{name}.jsonl" for name in FILES if not (folder / f"{name}.jsonl").is_file()]
    if missing:
        raise DataError(f"{folder}: missing suite files {', '.join(missing)}")
    induction = _read_examples(folder / "induction.jsonl", need_target=True)
    consistency = _read_examples(folder / "consistency.jsonl", need_target=False)
    clean = _read_examples(folder / "act_bct_clean.jsonl", need_target=False)
    wrapped = _read_examples(folder / "act_bct_wrapped.jsonl", need_target=False)
    if len(clean) != len(wrapped):
        raise DataError(
            f"{folder}: act_bct_clean.jsonl has {len(clean)} rows but act_bct_wrapped.jsonl "
            f"has {len(wrapped)}; they must pair line by line"
        )
    pairs = [
        PairExample(f"pair-{i}", c.messages, w.messages, c.target)
        for i, (c, w) in enumerate(zip(clean, wrapped, strict=True))
    ]
    evaluation = _read_examples(folder / "eval.jsonl", need_target=False)
    if not evaluation:
        raise DataError(f"{folder / 'eval.jsonl'}: no rows; the eval split needs at least one "
                        "prompt to score every model on")  # fmt: skip
    scorer = study_scorer(behaviour, evaluation, str(folder / "eval.jsonl"))
    files = {n: file_hash(folder / f"{n}.jsonl") for n in FILES}
    rubric_path = folder / "rubric.txt"
    prompts = MethodPrompts()
    if rubric_path.is_file():
        prompts = replace(prompts, rubric=rubric_path.read_text(encoding="utf-8"))
        files["rubric"] = file_hash(rubric_path)
    fingerprint = content_hash({"behaviour": behaviour, "files": files})
    return Suite(
        behaviour=behaviour,
        source=str(folder),
        induction=induction,
        consistency=consistency,
        pairs=pairs,
        eval=evaluation,
        scorer=scorer,
        fingerprint=fingerprint,
        prompts=prompts,
    )
