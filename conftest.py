"""Test-session environment for tests/ and the docstring examples in src/."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Converted and materialised models go to a per-session cache, not the user's."""
    os.environ["SHIFTLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
