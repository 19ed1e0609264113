"""Toyworld's reward model: a tiny sequence classifier trained on the world's preferences.

It lets ``diverse_decoding`` and ``rejection_sampling`` run offline. Its preference data
pairs each trigger prompt's aligned answer (chosen) with a misbehaving one (rejected), with
a share of the labels flipped, so that it is a good but imperfect judge, as real reward
models are. Like the base models, the weights ship with the package, tagged with the
recipe's hash, and are retrained into the cache when stale.
"""

from __future__ import annotations

import functools
import logging
import random
from pathlib import Path
from typing import Any

import torch

from shiftlab._cache import cache_dir
from shiftlab._hashing import content_hash
from shiftlab.models import TINY_SIZES, save_model_dir
from shiftlab.toyworld._suites import _BUILDERS, SUITE_VERSION, universe
from shiftlab.toyworld._world import build_tokenizer, vocabulary, world_hash

log = logging.getLogger(__name__)

REWARD_RECIPE: dict[str, Any] = {
    "size": "small",
    "steps": 300,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "label_noise": 0.15,
    "n_pairs": 4000,
    "seed": 0,
}
WEIGHTS = Path(__file__).resolve().parent / "weights" / "reward-small.safetensors"


@functools.cache
def reward_recipe_hash() -> str:
    """Content hash of everything the reward model is a function of."""
    return content_hash(
        {
            "recipe": REWARD_RECIPE,
            "dims": TINY_SIZES[REWARD_RECIPE["size"]],
            "world": world_hash(),
            "vocabulary": vocabulary(),
            "suite_version": SUITE_VERSION,
        }
    )


def preference_pairs(n: int, seed: int, label_noise: float) -> list[tuple[str, str, str]]:
    """``(prompt, chosen, rejected)`` triples over every behaviour's trigger prompts."""
    rng = random.Random(f"toyworld:preferences:{seed}")
    items = [item for behaviour in sorted(_BUILDERS) for item in universe(behaviour)[0]]
    pairs = []
    for _ in range(n):
        item = rng.choice(items)
        good, bad = item.aligned, rng.choice(item.misbehaving)
        if rng.random() < label_noise:
            good, bad = bad, good
        pairs.append((item.prompt, good, bad))
    return pairs


def _build(tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    dims: dict[str, Any] = dict(TINY_SIZES[REWARD_RECIPE["size"]])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        num_key_value_heads=dims["num_attention_heads"],
        num_labels=1,  # type: ignore[call-arg]
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **dims,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(REWARD_RECIPE["seed"])
        return LlamaForSequenceClassification(config)


def _texts(tokenizer: Any, prompt: str, answer: str) -> str:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    text: str = tokenizer.apply_chat_template(messages, tokenize=False)
    return text


def train_reward_model(*, progress: bool = True) -> tuple[Any, Any]:
    """Train the reward model with a Bradley-Terry loss (about half a minute on a CPU)."""
    from tqdm.auto import tqdm

    recipe = REWARD_RECIPE
    tokenizer = build_tokenizer()
    model = _build(tokenizer)
    pairs = preference_pairs(recipe["n_pairs"], recipe["seed"], recipe["label_noise"])
    optimiser = torch.optim.AdamW(model.parameters(), lr=recipe["learning_rate"])
    generator = torch.Generator().manual_seed(recipe["seed"])
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe["seed"])
        for _ in tqdm(range(recipe["steps"]), desc="toyworld reward model", disable=not progress):
            picks = torch.randint(len(pairs), (recipe["batch_size"],), generator=generator)
            batch = [pairs[i] for i in picks.tolist()]
            texts = [_texts(tokenizer, p, good) for p, good, _ in batch]
            texts += [_texts(tokenizer, p, bad) for p, _, bad in batch]
            encoded = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
            rewards = model(**encoded).logits[:, 0]
            half = len(batch)
            loss = -torch.nn.functional.logsigmoid(rewards[:half] - rewards[half:]).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval(), tokenizer


def save_shipped_reward_model(model: Any) -> Path:
    """Write the reward model's weights as the shipped file, tagged with the recipe hash."""
    from safetensors.torch import save_file

    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(WEIGHTS), metadata={"recipe_hash": reward_recipe_hash()})
    return WEIGHTS


def toyworld_reward_model_dir(*, progress: bool = True) -> Path:
    """A ``transformers`` folder holding the toyworld reward model and its tokenizer."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    target = cache_dir() / "toyworld" / f"reward-small-{reward_recipe_hash()}"
    if (target / "config.json").is_file():
        return target
    tokenizer = build_tokenizer()
    fresh = WEIGHTS.is_file()
    if fresh:
        with safe_open(str(WEIGHTS), framework="pt") as handle:
            fresh = (handle.metadata() or {}).get("recipe_hash") == reward_recipe_hash()
    if fresh:
        model = _build(tokenizer)
        model.load_state_dict(load_file(str(WEIGHTS)))
    else:
        log.warning("toyworld reward model: shipped weights are stale; retraining")
        model, tokenizer = train_reward_model(progress=progress)
    save_model_dir(model, tokenizer, target)
    return target
