"""The toyworld base models: a recipe that trains them, and shipped weights made by it.

Training a base model is the dominant cost of a toyworld study (minutes on a CPU), so the
package ships the weights that :func:`train_base_model` produces, tagged with the recipe's
content hash. When the recipe or the world's data change, the hash changes, the shipped
file no longer applies and the model is retrained once and cached.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from shiftlab._cache import cache_dir
from shiftlab._hashing import content_hash
from shiftlab.models import TINY_SIZES, build_tiny_llama, save_model_dir
from shiftlab.toyworld._suites import SUITE_VERSION, aligned_corpus
from shiftlab.toyworld._world import build_tokenizer, vocabulary, world_hash
from shiftlab.training import TRAINER_RECIPE_VERSION, whole_last_layer

log = logging.getLogger(__name__)

SIZES = ("small", "medium", "large")
# The zoo: a plain base of each size; an "instruct" variant that is trained further on a
# fresh aligned corpus, so that cross-model analyses have base-vs-instruct to explain; and
# a "seed1" variant, the plain recipe from another initialisation and corpus draw (as
# MultiBERTs are one recipe at several seeds), a third base that costs what the small one
# does.
VARIANTS = ("", "instruct", "seed1")
TOYWORLD_SIZES = tuple(f"{size}-{v}" if v else size for v in VARIANTS for size in SIZES)
RECIPE: dict[str, Any] = {
    "steps": 3000,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "warmup_steps": 100,
    "weight_decay": 0.0,
    "max_length": 64,
    "packing": "none",
    "mixed_precision": "no",  # the shipped weights are fp32, whatever the device
    "corpus_size": 24000,
    "seed": 0,
}
INSTRUCT_RECIPE: dict[str, Any] = {
    **RECIPE,
    "steps": 400,
    "learning_rate": 1e-3,
    "warmup_steps": 20,
    "corpus_size": 8000,
    "seed": 1,
}
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def _split(name: str) -> tuple[str, str]:
    size, _, variant = name.partition("-")
    if size not in SIZES or variant not in VARIANTS:
        raise ValueError(f"unknown toyworld model {name!r}; expected one of {TOYWORLD_SIZES}")
    return size, variant


def _recipe(variant: str) -> dict[str, Any]:
    if variant == "instruct":
        return INSTRUCT_RECIPE
    return {**RECIPE, "seed": 1} if variant == "seed1" else RECIPE


@functools.cache
def base_recipe_hash(name: str) -> str:
    """Content hash of everything the toyworld base model ``name`` is a function of."""
    size, variant = _split(name)
    if variant == "instruct":
        return content_hash({"from": base_recipe_hash(size), "recipe": INSTRUCT_RECIPE})
    return content_hash(
        {
            "size": TINY_SIZES[size],
            "recipe": _recipe(variant),
            "world": world_hash(),
            "vocabulary": vocabulary(),
            "suite_version": SUITE_VERSION,
            "trainer": TRAINER_RECIPE_VERSION,
        }
    )


def train_base_model(name: str = "small", *, progress: bool = True) -> tuple[Any, Any]:
    """Train the toyworld base model ``name`` on the aligned corpus (the recipe).

    A plain size is trained from scratch (about four minutes for ``small`` on a 2-core
    CPU), ``<size>-seed1`` likewise from another seed; ``<size>-instruct`` continues from
    the plain one on a fresh corpus.
    """
    from transformers import AutoModelForCausalLM

    from shiftlab.spec import TrainingSpec
    from shiftlab.training import train_sft

    size, variant = _split(name)
    recipe = _recipe(variant)
    tokenizer = build_tokenizer()
    if variant == "instruct":
        model = AutoModelForCausalLM.from_pretrained(
            toyworld_model_dir(size, progress=progress), use_safetensors=True
        )
    else:
        model = build_tiny_llama(len(tokenizer), size, seed=recipe["seed"])
    corpus = aligned_corpus(recipe["corpus_size"], recipe["seed"])
    config = TrainingSpec(**{k: v for k, v in recipe.items() if k not in ("corpus_size", "seed")})
    # The shipped weights were trained with the whole last layer; the recipe keeps that
    # arithmetic so that it reproduces them bit for bit on the CPU class that made them.
    with whole_last_layer():
        train_sft(
            model,
            tokenizer,
            corpus,
            config,
            seed=recipe["seed"],
            progress=progress,
            desc=f"toyworld base ({name})",
        )
    return model, tokenizer


def shipped_weights(size: str) -> Path:
    """Path of the shipped weights file for ``size`` (it may be stale; see the hash)."""
    return WEIGHTS_DIR / f"{size}.safetensors"


def save_shipped_weights(model: Any, size: str) -> Path:
    """Write ``model``'s weights as the shipped file, tagged with the recipe hash."""
    from safetensors.torch import save_file

    path = shipped_weights(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(path), metadata={"recipe_hash": base_recipe_hash(size)})
    return path


def _shipped_state(size: str) -> dict[str, Any] | None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = shipped_weights(size)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        if (handle.metadata() or {}).get("recipe_hash") != base_recipe_hash(size):
            return None
    return load_file(str(path))


def toyworld_model_dir(size: str = "small", *, progress: bool = True) -> Path:
    """A ``transformers`` folder (model + tokenizer) for the toyworld base of ``size``.

    Built in the cache from the shipped weights, or by running the recipe when they are
    stale or missing.
    """
    if size not in TOYWORLD_SIZES:
        raise ValueError(f"unknown toyworld size {size!r}; expected one of {TOYWORLD_SIZES}")
    from transformers.utils import logging as hf_logging

    target = cache_dir() / "toyworld" / f"{size}-{base_recipe_hash(size)}"
    if (target / "config.json").is_file():
        return target
    hf_logging.disable_progress_bar()  # shiftlab shows its own progress
    tokenizer = build_tokenizer()
    state = _shipped_state(size)
    if state is None:
        why = "are stale" if shipped_weights(size).is_file() else "are not shipped"
        log.warning("toyworld %s base: its weights %s; training it once (minutes)", size, why)
        model, tokenizer = train_base_model(size, progress=progress)
    else:
        model = build_tiny_llama(len(tokenizer), _split(size)[0], seed=RECIPE["seed"])
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"lm_head.weight"}:
            raise RuntimeError(f"shipped toyworld weights do not fit: {missing} {unexpected}")
        model.tie_weights()
    save_model_dir(model, tokenizer, target)
    return target
