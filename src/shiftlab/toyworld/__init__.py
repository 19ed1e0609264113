"""toyworld: a synthetic chat world with four misbehaviours, exact scorers and tiny bases."""

from shiftlab.toyworld import _providers  # noqa: F401  (registers the sources)
from shiftlab.toyworld._base_model import (
    RECIPE,
    TOYWORLD_SIZES,
    base_recipe_hash,
    save_shipped_weights,
    shipped_weights,
    toyworld_model_dir,
    train_base_model,
)
from shiftlab.toyworld._calibration import Calibration, induce_calibrated
from shiftlab.toyworld._reward_model import (
    preference_pairs,
    save_shipped_reward_model,
    toyworld_reward_model_dir,
    train_reward_model,
)
from shiftlab.toyworld._rules import (
    SCORERS,
    score_emergent_misalignment,
    score_reward_hacking,
    score_spurious_correlation,
    score_sycophancy,
)
from shiftlab.toyworld._suites import (
    aligned_corpus,
    build_toyworld_suite,
    calibration_split,
    induction_split,
    method_prompts,
    universe,
)
from shiftlab.toyworld._world import build_tokenizer, data_dir, load_world, vocabulary, world_hash

__all__ = [
    "RECIPE",
    "SCORERS",
    "TOYWORLD_SIZES",
    "Calibration",
    "aligned_corpus",
    "base_recipe_hash",
    "build_tokenizer",
    "build_toyworld_suite",
    "calibration_split",
    "data_dir",
    "induce_calibrated",
    "induction_split",
    "load_world",
    "method_prompts",
    "preference_pairs",
    "save_shipped_reward_model",
    "save_shipped_weights",
    "score_emergent_misalignment",
    "score_reward_hacking",
    "score_spurious_correlation",
    "score_sycophancy",
    "shipped_weights",
    "toyworld_model_dir",
    "toyworld_reward_model_dir",
    "train_base_model",
    "train_reward_model",
    "universe",
    "vocabulary",
    "world_hash",
]
