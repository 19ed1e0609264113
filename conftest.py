"""Test-session environment for tests/ and the docstring examples in src/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The study's behaviour data: $SHIFTLAB_DATA (where `shiftlab data fetch` puts it), else the
# copy beside the maintainers' checkout, read in place. Tests and doctests that need it skip
# when neither has it.
STUDY_DATASET = "consistency-misalignment"
# The old import path warns when imported; tests/test_layout.py imports it on purpose.
collect_ignore = ["src/shiftlab/pipeline.py"]
_BESIDE = Path(__file__).resolve().parent.parent / "shared" / "data"
if "SHIFTLAB_DATA" not in os.environ and (_BESIDE / STUDY_DATASET).is_dir():
    os.environ["SHIFTLAB_DATA"] = str(_BESIDE)


def study_data() -> Path:
    """Where the study's behaviour folders are read from (it may not exist)."""
    from shiftlab.behaviours import data_home

    return data_home() / STUDY_DATASET


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, with the reason, docstring examples that read the study's data when it is absent."""
    if study_data().is_dir():
        return
    skip = pytest.mark.skip(
        reason=f"the study's behaviour data is not at {study_data()} "
        f"(`shiftlab data fetch {STUDY_DATASET}`, or set $SHIFTLAB_DATA)"
    )
    for item in items:
        docstring = getattr(getattr(item, "dtest", None), "docstring", None) or ""
        if STUDY_DATASET in docstring:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Converted and materialised models go to a per-session cache, not the user's."""
    os.environ["SHIFTLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
