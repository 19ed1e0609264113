"""Shared fixtures: one CPU thread, a private cache, and the toyworld base loaded once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "consistency-misalignment"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["SHIFTLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def toy_model_dir(_private_cache: None) -> Path:
    from shiftlab.toyworld import toyworld_model_dir

    return toyworld_model_dir("small")


@pytest.fixture()
def toy(toy_model_dir: Path):
    """A fresh (model, tokenizer) of the shipped toyworld base."""
    from shiftlab.models import load_causal_lm

    return load_causal_lm("toyworld:small")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("the study's behaviour data is not beside this checkout")
    return SHARED_DATA
