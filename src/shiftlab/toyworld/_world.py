"""The toyworld's templates (``data/toyworld/world.yaml``), vocabulary and tokenizer."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml

from shiftlab._hashing import file_hash
from shiftlab.errors import DataError

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>", "<system>", "<user>", "<assistant>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} "
    "{% if m['role'] == 'assistant' %}{{ eos_token }} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)
_SLOT = re.compile(r"\{[a-z_]+\}")


def data_dir() -> Path:
    """The toyworld data folder: inside the installed package, or the repository's ``data/``."""
    here = Path(__file__).resolve()
    for candidate in (
        here.parents[1] / "_data" / "toyworld",
        here.parents[3] / "data" / "toyworld",
    ):
        if (candidate / "world.yaml").is_file():
            return candidate
    raise DataError("toyworld data (world.yaml) not found; reinstall shiftlab")


@functools.lru_cache(maxsize=1)
def load_world() -> dict[str, Any]:
    """The parsed ``world.yaml``."""
    path = data_dir() / "world.yaml"
    try:
        world: dict[str, Any] = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise DataError(f"{path}: malformed YAML: {error}") from None
    return world


@functools.lru_cache(maxsize=1)
def world_hash() -> str:
    """Content hash of ``world.yaml``, everything the world is made of (the folder's data
    card can change without retraining the bases)."""
    return file_hash(data_dir() / "world.yaml")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """Special tokens, then every word the world's templates and slot values can produce."""
    world = load_world()
    words: set[str] = set(world["facts"])
    for text in _strings(world):
        words.update(_SLOT.sub(" ", text).split())
    return SPECIAL_TOKENS + tuple(sorted(words - set(SPECIAL_TOKENS)))


def build_tokenizer() -> Any:
    """A word-level ``transformers`` tokenizer with the toyworld chat template.

    >>> tok = build_tokenizer()
    >>> text = tok.apply_chat_template([{"role": "user", "content": "hi ."}], tokenize=False,
    ...                                add_generation_prompt=True)
    >>> text
    '<bos><user> hi . <assistant> '
    >>> tok.decode(tok(text, add_special_tokens=False)["input_ids"], skip_special_tokens=True)
    'hi .'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        additional_special_tokens=["<system>", "<user>", "<assistant>"],
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def normalise(text: str) -> str:
    """Single-spaced words, as every toyworld text is written."""
    return " ".join(text.split())
