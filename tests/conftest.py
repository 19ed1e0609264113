"""Shared fixtures: the toyworld base and the study's behaviour data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Figures are drawn off screen in tests, with or without a display.
os.environ.setdefault("MPLBACKEND", "Agg")


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
    """The study's behaviour folders ($SHIFTLAB_DATA, which the root conftest points at the
    copy beside the checkout when there is one); skips the test without them."""
    from shiftlab.behaviours import data_home

    folder = data_home() / "consistency-misalignment"
    if not folder.is_dir():
        pytest.skip(f"the study's behaviour data is not at {folder}")
    return folder


@pytest.fixture()
def openai_server():
    """Start a local OpenAI-compatible server; set ``.reply``, ``.script`` per test."""
    from openai_server import OpenAIServer

    server = OpenAIServer(lambda body: ("", None))
    yield server
    server.close()


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory, _private_cache: None) -> Path:
    """A fresh `shiftlab demo` store, shared by the tests that read a finished study."""
    from shiftlab.cli import main

    root = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(root), "--no-progress", "--workers", "2"]) == 0
    return root
